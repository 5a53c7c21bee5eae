"""Judge a candidate stack: its image for each case must match the PyTorch reference's within thresholds.toml.

python check.py --stack WORKSPACE --model MODEL_DIR --inputs CASES_DIR --cache CACHE_DIR
Prints CHECK FAIL <metric> <value> <op> <threshold> (<case>) per failure, else CHECK PASS <values>; exits 1 on any
failure. Reference images are computed once per model, reference code and case, and kept in the cache folder;
each case's image and the reference's are written to CACHE_DIR/outputs as CASE.png and CASE.reference.png.
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from metrics import judge  # noqa: E402
from stack import Case, Stack, StackError, load_cases, load_thresholds  # noqa: E402

MODEL_FILES = ("config.json", "model.safetensors")


def main() -> int:
    parser = argparse.ArgumentParser(description="showo2-tiny checker")
    parser.add_argument("--stack", required=True, type=Path)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--inputs", required=True, type=Path)
    parser.add_argument("--cache", required=True, type=Path)
    args = parser.parse_args()
    cases, thresholds = load_cases(args.inputs), load_thresholds()
    expected = reference_images(args.model, cases, args.cache)
    failures, summaries = [], []
    with tempfile.TemporaryDirectory() as folder:
        for case, candidate in candidate_images(args.stack, args.model, cases, Path(folder)):
            if isinstance(candidate, str):
                failures.append(f"{case.name}: {candidate}")
                continue
            keep_images(args.cache / "outputs", case.name, candidate, expected[case.name])
            found, summary = judge(candidate, expected[case.name], thresholds)
            failures += [f"{failure} ({case.name})" for failure in found]
            summaries.append(f"{case.name}: {summary}")
    for failure in failures:
        print(f"CHECK FAIL {failure}")
    if failures:
        return 1
    print(f"CHECK PASS {'; '.join(summaries)}")
    return 0


def reference_images(model: Path, cases: list[Case], cache: Path) -> dict[str, np.ndarray]:
    images, reference = {}, None
    for case in cases:
        path = cache / f"showo2-tiny-reference-{reference_key(model, case)}.png"
        if not path.is_file():
            if reference is None:
                from reference.generate import Reference

                reference = Reference(model)
            image = reference.generate(case.prompt, case.seed, case.steps, case.guidance)
            save_atomic(image, path)
        images[case.name] = np.asarray(Image.open(path).convert("RGB"))
    return images


def reference_key(model: Path, case: Case) -> str:
    import torch

    digest = hashlib.sha256()
    for name in MODEL_FILES:
        digest.update(hashlib.sha256((model / name).read_bytes()).digest())
    for path in sorted((HERE / "reference").glob("*.py")):
        digest.update(path.read_bytes())
    digest.update(json.dumps(case.__dict__, sort_keys=True).encode() + torch.__version__.encode())
    return digest.hexdigest()[:16]


def save_atomic(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".png")
    os.close(handle)
    image.save(temp)
    os.replace(temp, path)


def keep_images(folder: Path, name: str, candidate: np.ndarray, reference: np.ndarray) -> None:
    """For people to look at: the Judge moves {cache}/outputs to the run's folder for the round."""
    save_atomic(Image.fromarray(candidate), folder / f"{name}.png")
    save_atomic(Image.fromarray(reference), folder / f"{name}.reference.png")


def candidate_images(workspace: Path, model: Path, cases: list[Case], folder: Path):
    """(case, RGB array) per case, or (case, the reason there is none)."""
    with Stack(workspace, model) as stack:
        try:
            stack.wait_ready()
        except StackError as error:
            yield from ((case, f"stack did not start: {error}") for case in cases)
            return
        for case in cases:
            out = folder / f"{case.name}.png"
            try:
                stack.ask(case.request(out))
                yield case, np.asarray(Image.open(out).convert("RGB"))
            except (StackError, OSError) as error:
                yield case, str(error)


if __name__ == "__main__":
    sys.exit(main())
