"""JSON text from outside (a request body, a form field, a file): parsed with a depth limit.

Python's parser recurses once per nesting level, so ``[[[[…]]]]`` a few thousand deep raises
RecursionError; the depth is counted first, without recursion, and every door refuses such a
text in the same words (SPEC "HTTP": JSON nested deeper than 32 levels is a 400).
"""

from __future__ import annotations

import json
from typing import Any

MAX_JSON_DEPTH = 32


class NotJson(ValueError):
    """The text is not JSON we read: the message says why in plain words."""


class TooDeep(NotJson):
    """The text nests deeper than MAX_JSON_DEPTH; it was not parsed."""


def load_json(text: bytes | str) -> Any:
    """Return the value of a JSON text.

    Raises TooDeep past MAX_JSON_DEPTH levels and NotJson for any other text that is not JSON;
    never RecursionError.
    """
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if nesting(raw) > MAX_JSON_DEPTH:
        raise TooDeep(f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise NotJson("not JSON") from exc


def nesting(raw: bytes) -> int:
    """Return the deepest bracket nesting in a JSON text, ignoring brackets inside strings."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest
