"""The one way the TUI shows text it did not write itself (store, targets, agents, paths, errors): a rich Text that
is never parsed as markup, with control characters shown as escapes instead of reaching the terminal."""

import re

from rich.text import Text

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(value: object) -> str:
    """The value as a string with every control character but newline and tab written out, e.g. `\\x1b`."""
    return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", "" if value is None else str(value))


def lit(value: object, style: str = "") -> Text:
    """Untrusted text, shown exactly as it is; a Text is already safe and passes through."""
    if isinstance(value, Text):
        return value
    return Text(clean(value), style=style)


def line(value: object, style: str = "") -> Text:
    """One line of untrusted text: its line breaks shown as ⏎ so a table row keeps every word."""
    return Text(clean(value).strip("\n").replace("\n", " ⏎ "), style=style)


def join(*parts: "str | Text | tuple[str, str]") -> Text:
    """Pieces of untrusted text, each literal, some with a style: `join("run ", (run_id, "bold"))`."""
    text = Text()
    for part in parts:
        if isinstance(part, tuple):
            text.append(clean(part[0]), style=part[1])
        else:
            text.append(lit(part))
    return text
