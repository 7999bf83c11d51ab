"""URL rules that compile their url_for builders on first use build the same URLs."""

from __future__ import annotations

from werkzeug.routing import Map, Rule

from arcade.url_rules import LazyBuilderRule


def _adapter(rule_class: type[Rule]):
    rules = Map(
        [
            rule_class("/machines/<machine_id>/qr.png", endpoint="qr"),
            rule_class("/x/<rule>", endpoint="named_rule"),
            rule_class("/page", endpoint="page", defaults={"n": 1}),
        ]
    )
    return rules.bind("pay.example", "/")


def test_given_lazy_rules_when_urls_are_built_then_they_equal_werkzeugs_own() -> None:
    """Path values, a value named like the builder's own argument, unknown values as a query
    string and defaults all build as werkzeug's eager rules do."""
    cases = [
        ("qr", {"machine_id": "cab 001", "quantity": 3}),
        ("named_rule", {"rule": "a/b"}),
        ("page", {}),
    ]
    lazy, eager = _adapter(LazyBuilderRule), _adapter(Rule)
    for endpoint, values in cases:
        assert lazy.build(endpoint, values) == eager.build(endpoint, values)
    assert lazy.build("qr", {"machine_id": "cab001", "quantity": 3}) == (
        "/machines/cab001/qr.png?quantity=3"
    )


def test_given_lazy_rules_when_a_path_is_matched_then_no_builder_was_needed() -> None:
    """Matching uses the rule's regular expression: a request finds its endpoint as before."""
    assert _adapter(LazyBuilderRule).match("/machines/cab001/qr.png") == (
        "qr",
        {"machine_id": "cab001"},
    )
