"""The starting stack for showo2-mlx: the official PyTorch pipeline (official.py) behind the JSON-lines protocol
of showo2-tiny's serve.py. Porting body, head and VAE to MLX with the tiny seed's knobs is the run's job.

python serve.py --model MODEL_DIR
"""

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description="Show-o2 stack (official pipeline)")
    parser.add_argument("--model", required=True, type=Path)
    args = parser.parse_args()
    from official import Pipeline

    pipeline = Pipeline(args.model)
    reply({"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        try:
            started = time.perf_counter()
            image = pipeline.generate(
                request["prompt"], int(request["seed"]), int(request["steps"]), float(request["guidance"])
            )
            image.save(request["out"])
            reply({"id": request["id"], "out": request["out"], "timings": {"total_s": time.perf_counter() - started}})
        except Exception as error:  # noqa: BLE001
            reply({"id": request.get("id"), "error": f"{type(error).__name__}: {error}"})


def reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
