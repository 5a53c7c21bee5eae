"""The JSON-lines loop every bench worker runs: ready, then one answer line per request line."""

import json
import sys
from collections.abc import Callable
from typing import Any

PROTOCOL = sys.stdout


def serve(generate: Callable[[dict], dict]) -> None:
    """Answer stdin requests on the real stdout; anything else printed goes to stderr."""
    reply({"ready": True})
    for line in sys.stdin:
        if line.strip():
            reply(answer(generate, line))


def answer(generate: Callable[[dict], dict], line: str) -> dict:
    raw: Any = None
    try:
        raw = json.loads(line)
        return generate(raw)
    except Exception as error:  # noqa: BLE001 - one bad request must not end the worker
        return {"id": raw.get("id") if isinstance(raw, dict) else None, "error": f"{type(error).__name__}: {error}"}


def reply(message: dict) -> None:
    PROTOCOL.write(json.dumps(message) + "\n")
    PROTOCOL.flush()
