"""URL rules that build their ``url_for`` code on first use, not when the app is made.

werkzeug compiles two URL builders per rule (Python source generated, parsed and compiled)
as each route is added: about 0.5 ms a rule, 15 ms for this app's routes, paid in every Lambda
cold start although a request matches rules with their regular expressions and builds URLs
only on the few pages that call ``url_for``. The matching part is compiled as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from werkzeug.routing import Rule


class LazyBuilderRule(Rule):
    """A werkzeug Rule whose URL builders are compiled the first time one is called."""

    def _compile_builder(self, append_unknown: bool = True) -> Callable[..., tuple[str, str]]:
        compiled: list[Callable[..., tuple[str, str]]] = []

        def build(rule: Rule, /, **values: Any) -> tuple[str, str]:
            if not compiled:  # two threads may both compile: the same code, once kept
                compiled.append(Rule._compile_builder(rule, append_unknown).__get__(rule, None))
            return compiled[0](**values)

        return build
