"""Text a person reads: a line an operator or a cabinet gave, shown on a page or in a table."""

from __future__ import annotations


def one_line(value: str, most: int) -> str | None:
    """Return ``value`` with each run of white space made one space and its ends trimmed, when
    that is 1 to ``most`` printable characters; else None.

    Printable leaves out line breaks, controls and the characters that turn text around
    (U+202E): what the /admin pages, the player's page and ``machines list`` show as one line.
    """
    line = " ".join(value.split())
    return line if line and len(line) <= most and line.isprintable() else None
