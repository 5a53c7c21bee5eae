"""The showo2-tiny PyTorch reference as a worker speaking the stack protocol (JSON lines, see the seed's serve.py),
for the reference row of `atelier bench showo2`.

python -m app.bench.showo2_reference --target TARGET_DIR --model MODEL_DIR
"""

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description="showo2-tiny reference worker")
    parser.add_argument("--target", required=True, type=Path)
    parser.add_argument("--model", required=True, type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(args.target.resolve()))
    from reference.generate import Reference

    reference = Reference(args.model)
    reply({"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        try:
            started = time.perf_counter()
            image = reference.generate(
                request["prompt"], int(request["seed"]), int(request["steps"]), float(request["guidance"])
            )
            total = time.perf_counter() - started
            image.save(request["out"])
            reply({"id": request["id"], "out": request["out"], "timings": {"total_s": total}})
        except Exception as error:  # noqa: BLE001 - reported to the bench as this request's error
            reply({"id": request.get("id"), "error": f"{type(error).__name__}: {error}"})


def reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
