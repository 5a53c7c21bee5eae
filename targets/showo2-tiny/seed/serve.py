"""The stack as a JSON-lines worker: prints {"ready": true, "knobs": {...}}, then answers each request line
{"id", "prompt", "seed", "steps", "guidance", "out"} by writing the PNG to "out" and printing
{"id", "out", "timings": {"body_s", "head_s", "vae_s", "total_s"}} (or {"id", "error"}).

python serve.py --model MODEL_DIR
"""

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from knobs import Knobs


def main() -> None:
    parser = argparse.ArgumentParser(description="Show-o2 tiny MLX stack")
    parser.add_argument("--model", required=True, type=Path)
    args = parser.parse_args()
    knobs = Knobs.read()
    import blas

    blas.select(knobs.blas)
    from coreml import Unavailable
    from PIL import Image
    from sampler import Sampler

    try:
        sampler = Sampler(args.model, knobs)
    except Unavailable as error:
        sys.exit(f"serve.py: {error}")
    reply({"ready": True, "knobs": asdict(knobs)})
    for line in sys.stdin:
        request = json.loads(line)
        try:
            pixels, timings = sampler.generate(
                request["prompt"], int(request["seed"]), int(request["steps"]), float(request["guidance"])
            )
            Image.fromarray(pixels).save(request["out"])
            reply({"id": request["id"], "out": request["out"], "timings": timings})
        except Exception as error:  # noqa: BLE001
            reply({"id": request.get("id"), "error": f"{type(error).__name__}: {error}"})


def reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
