"""What the README and docs/ tell a newcomer to open or run is in the repository.

A path is taken from inline code (`scripts/serve`), fenced code blocks and relative Markdown
links, when it starts with one of the repository's folders. Placeholders (…, <id>, *) and the
MQTT topic root `arcade/machine` (a topic, not a folder) are not paths.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FOLDERS = ("scripts", "arcade", "tests", "docs", "bench", "demo")
PATH = re.compile(rf"^(?:\./)?((?:{'|'.join(FOLDERS)})/[A-Za-z0-9_./-]*)$")
PLACEHOLDER = re.compile(r"[…<>*{}$+#]")
TOPIC_ROOT = "arcade/machine"
INLINE_CODE = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^```.*?$(.*?)^```", re.DOTALL | re.MULTILINE)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def mentioned_paths(text: str) -> set[str]:
    """Return the repository paths that ``text`` names."""
    fenced = FENCE.findall(text)
    prose = FENCE.sub("", text)
    words: list[str] = []
    for snippet in INLINE_CODE.findall(prose) + fenced:
        words += snippet.split()
    words += [target.split("#", 1)[0] for target in LINK.findall(prose)]
    found = set()
    for word in words:
        word = word.strip("\"'(),;:").rstrip(".")
        match = PATH.match(word)
        if not match or PLACEHOLDER.search(word):
            continue
        path = match.group(1)
        if path == TOPIC_ROOT or path.startswith(TOPIC_ROOT + "/"):
            continue
        found.add(path)
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_path_a_document_names_exists(document):
    """GIVEN README.md or a doc WHEN every repository path it names is looked up THEN each is
    there."""
    paths = mentioned_paths(document.read_text())

    missing = sorted(path for path in paths if not (ROOT / path).exists())

    assert paths, f"{document.name} names no path: the parser found nothing"
    assert missing == [], f"{document.name} names files that are not in the repository"


def test_the_readme_names_the_scripts_a_newcomer_runs():
    """GIVEN the README WHEN read THEN it names the scripts that set everything up."""
    paths = mentioned_paths((ROOT / "README.md").read_text())

    assert {"scripts/serve", "scripts/test", "scripts/demo", "scripts/flask"} <= paths


def test_the_parser_finds_paths_and_skips_what_is_not_one():
    text = (
        "Run `scripts/serve` and `.venv/bin/python bench/bench.py --help`; see"
        " [the cabinet](docs/cabinet.md#wiring).\n"
        "```sh\nscripts/flask machines list\n```\n"
        "Topics `arcade/machine/+/coinpulse` under `arcade/machine`; `tests/…`; `docs/<x>.md`."
    )

    assert mentioned_paths(text) == {
        "scripts/serve",
        "bench/bench.py",
        "docs/cabinet.md",
        "scripts/flask",
    }


@pytest.mark.parametrize("document", [*DOCUMENTS], ids=lambda path: path.name)
def test_no_document_points_to_a_spec_file_outside_the_repository(document):
    """GIVEN the README and docs WHEN read THEN none sends the reader to SPEC.md, which is not
    in the repository."""
    assert "SPEC.md" not in document.read_text()


def test_bench_help_points_to_the_readme_not_to_a_missing_file():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "bench/bench.py", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )

    assert "SPEC" not in done.stdout
    assert "README.md" in done.stdout
