"""The one way the report writes text it did not make: HTML-escaped, and every control, format or lone surrogate
character shown as its code (\\x1b, \\u202e) instead of acting on the page."""

import html
import re

HIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ud800-\udfff]")


def _code(match: re.Match) -> str:
    point = ord(match.group())
    return f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}"


def text(value: object) -> str:
    """value as HTML text or attribute content: tags, entities and quotes inert, hidden characters visible."""
    return HIDDEN.sub(_code, html.escape(str(value), quote=True))
