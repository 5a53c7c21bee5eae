"""Judge a candidate stack: its image for each case must match the PyTorch reference's within thresholds.toml.

python check.py --stack WORKSPACE --model MODEL_DIR --inputs CASES_DIR --cache CACHE_DIR
Prints CHECK FAIL <metric> <value> <op> <threshold> (<case>) per failure, else CHECK PASS <values>; exits 1 on any
failure. Reference images are computed once per model, reference code and case, and kept in the cache folder;
each case's image and the reference's are written to CACHE_DIR/outputs as CASE.png and CASE.reference.png.
"""

import argparse
import hashlib
import io
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
from stack import Case, Stack, StackError, load_cases, load_thresholds, one_line, out_path, read_back  # noqa: E402

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
    for case, candidate in candidate_images(args.stack, args.model, cases):
        if isinstance(candidate, str):
            failures.append(f"{case.name}: {candidate}")
            continue
        keep_images(args.cache / "outputs", case.name, candidate, expected[case.name])
        found, summary = judge(candidate, expected[case.name], thresholds)
        failures += [f"{failure} ({case.name})" for failure in found]
        summaries.append(f"{case.name}: {summary}")
    for failure in failures:
        print(f"CHECK FAIL {one_line(failure)}")
    if failures:
        return 1
    print(f"CHECK PASS {'; '.join(summaries)}")
    return 0


def reference_images(model: Path, cases: list[Case], cache: Path) -> dict[str, np.ndarray]:
    images, reference = {}, None
    for case in cases:
        path = reference_path(model, case, cache)
        if not path.is_file():
            if reference is None:
                from reference.generate import Reference

                reference = Reference(model)
            image = reference.generate(case.prompt, case.seed, case.steps, case.guidance)
            save_atomic(image, path)
        images[case.name] = np.asarray(Image.open(path).convert("RGB"))
    return images


def cached_references(model: Path, cases: list[Case], cache: Path) -> dict[str, np.ndarray] | None:
    """The reference images the checker cached for these cases, or None when one is missing."""
    paths = {case.name: reference_path(model, case, cache) for case in cases}
    if not all(path.is_file() for path in paths.values()):
        return None
    return {name: np.asarray(Image.open(path).convert("RGB")) for name, path in paths.items()}


def reference_path(model: Path, case: Case, cache: Path) -> Path:
    return cache / f"showo2-tiny-reference-{reference_key(model, case)}.png"


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


def candidate_images(workspace: Path, model: Path, cases: list[Case]):
    """(case, RGB array) per case, or (case, the reason there is none)."""
    with Stack(workspace, model) as stack:
        try:
            stack.wait_ready()
        except StackError as error:
            yield from ((case, f"stack did not start: {error}") for case in cases)
            return
        for case in cases:
            out = out_path(workspace, case.name)
            try:
                stack.ask(case.request(out))
                yield case, load_image(out, workspace)
            except (StackError, OSError) as error:
                yield case, str(error)


def load_image(path: Path, workspace: Path) -> np.ndarray:
    """The RGB pixels of the image a stack wrote inside its folder."""
    try:
        return np.asarray(Image.open(io.BytesIO(read_back(path, workspace))).convert("RGB"))
    except (ValueError, Image.DecompressionBombError, SyntaxError) as error:
        raise StackError(f"{path.name} is not an image: {error}") from None


if __name__ == "__main__":
    sys.exit(main())
