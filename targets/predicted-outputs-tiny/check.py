"""Judge a candidate stack: for every case its output must equal the reference greedy decode token for token.

python check.py --stack WORKSPACE --model MODEL_DIR [--draft DIR] --inputs CASES_DIR --cache CACHE_DIR
                [--serve COMMAND]
Reference outputs are computed once and kept in CACHE_DIR, where the benchmark finds them to check the answers it
timed. The stack starts through the launch prefix in $ATELIER_CONFINE and gets its cases only as requests.
With --serve (the target's serve line, filled in by the Judge), a stack whose serve.py passed is also checked
through the server that command starts (served.py: the openai client, streamed and not, several clients at once),
each request carrying its prediction.
Prints CHECK FAIL <reason> per failure (or CHECK PASS <summary> with the prediction's measured overlap and the
stack's accepted share); exits 1 on failure.
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).absolute().parent
sys.path.insert(0, str(HERE))

import served  # noqa: E402
from workload import Case, Stack, StackError, load_cases, one_line, overlap  # noqa: E402

MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")
LIBRARIES = ("torch", "transformers", "tokenizers")
WHOLE_FILE_LIMIT = 1 << 30


def main() -> int:
    args = parse_args()
    cases = load_cases(args.inputs, args.model)
    expected = reference_outputs(args.model, cases, args.cache)
    answers, failures = candidate_answers(args.stack, args.model, args.draft, cases, expected)
    if args.serve and not failures:
        failures += served.check(args.serve, args.stack, served_cases(cases, expected), decoder(args.model))
    for failure in failures:
        print(f"CHECK FAIL {one_line(failure)}")
    if failures:
        return 1
    tokens = sum(len(expected[case.name]["tokens"]) for case in cases)
    accepted = sum(stat(answer, "accepted") for answer in answers)
    shares = [overlap(expected[c.name]["tokens"], expected[c.name]["prediction_tokens"]) for c in cases]
    server = " (and through its server)" if args.serve else ""
    print(f"CHECK PASS {len(cases)} cases, {tokens} tokens identical to the reference{server}; prediction overlap "
          f"{sum(shares) / len(shares):.0%} (mean), {accepted / max(tokens, 1):.0%} of tokens from accepted predicted "
          "tokens")  # fmt: skip
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="predicted-outputs checker")
    parser.add_argument("--stack", required=True, type=Path)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--draft", default="", help="draft model folder, passed on to the stack (empty: none)")
    parser.add_argument("--inputs", required=True, type=Path)
    parser.add_argument("--cache", required=True, type=Path)
    parser.add_argument("--serve", default="", help="the command that starts the stack's OpenAI server (+ --port 0)")
    return parser.parse_args()


def reference_path(model: Path, cases: list[Case], cache: Path) -> Path:
    return cache / f"predicted-reference-{reference_key(model, cases)}.json"


def cached_reference(model: Path, cases: list[Case], cache: Path) -> dict | None:
    path = reference_path(model, cases, cache)
    return json.loads(path.read_text()) if path.is_file() else None


def reference_outputs(model: Path, cases: list[Case], cache: Path) -> dict:
    path = reference_path(model, cases, cache)
    if path.is_file():
        return json.loads(path.read_text())
    from reference.generate import Reference

    reference = Reference(model)
    outputs = {}
    for case in cases:
        outputs[case.name] = reference.generate(case.prompt, case.max_tokens)
        outputs[case.name]["prediction_tokens"] = reference.tokenizer.encode(case.prediction, add_special_tokens=False)
    write_atomic(path, json.dumps(outputs))
    return outputs


def reference_key(model: Path, cases: list[Case]) -> str:
    """Model files (weights over 1 GiB by name and size), the reference code, the requests and library versions."""
    from importlib.metadata import version

    digest = hashlib.sha256()
    for path in sorted(p for p in model.iterdir() if p.name in MODEL_FILES or p.suffix == ".safetensors"):
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        digest.update(file_digest(path) if size < WHOLE_FILE_LIMIT else b"")
    for path in sorted((HERE / "reference").glob("*.py")):
        digest.update(path.read_bytes())
    for case in cases:
        digest.update(json.dumps(case.request(), sort_keys=True).encode())
    for library in LIBRARIES:
        digest.update(f"{library}=={version(library)}".encode())
    return digest.hexdigest()[:16]


def file_digest(path: Path) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.digest()


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    with os.fdopen(handle, "w") as f:
        f.write(text)
    os.replace(temp, path)


def candidate_answers(workspace: Path, model: Path, draft: str, cases: list[Case], expected: dict):
    answers, failures = [], []
    with Stack(workspace, model, Path(draft) if draft else None) as stack:
        try:
            stack.wait_ready()
        except StackError as error:
            return [], [f"stack did not start: {error}"]
        for case in cases:
            try:
                answer = stack.ask(case.request())
            except StackError as error:
                failures.append(f"{case.name}: {error}")
                if stack.process.poll() is not None:
                    break
                continue
            answers.append(answer)
            failures += [f"{case.name}: {reason}" for reason in compare(answer, expected[case.name])]
    return answers, failures


def served_cases(cases: list[Case], expected: dict) -> list[served.Expected]:
    """Each case as a client asks it: its messages, with the file as the prediction."""
    return [
        served.Expected(
            case.name, {"messages": case.messages, "prediction": {"type": "content", "content": case.prediction}},
            expected[case.name]["tokens"], expected[case.name]["text"], expected[case.name]["finish_reason"],
            case.max_tokens,
        )
        for case in cases
    ]  # fmt: skip


def decoder(model: Path):
    """Token ids to text as the reference decodes them."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model)).decode


def compare(answer: dict, expected: dict) -> list[str]:
    tokens = answer.get("tokens")
    if not isinstance(tokens, list) or not isinstance(answer.get("text"), str):
        return ["answer lacks a tokens list or a text string"]
    if tokens != expected["tokens"]:
        return [first_difference(tokens, expected["tokens"])]
    if answer.get("finish_reason") != expected["finish_reason"]:
        return [f"finish_reason {answer.get('finish_reason')!r}, reference {expected['finish_reason']!r}"]
    if answer["text"] != expected["text"]:
        return [f"text {answer['text'][:80]!r} differs from the reference text {expected['text'][:80]!r}"]
    return []


def stat(answer: dict, key: str) -> int:
    """A count from the answer's stats, as the stack reported it (0 when absent or not a count)."""
    stats = answer.get("stats")
    value = stats.get(key) if isinstance(stats, dict) else 0
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def first_difference(tokens: list, reference: list[int]) -> str:
    position = next(
        (i for i, (a, b) in enumerate(zip(tokens, reference, strict=False)) if a != b), min(len(tokens), len(reference))
    )
    got = tokens[position] if position < len(tokens) else "end"
    want = reference[position] if position < len(reference) else "end"
    return (
        f"first differing token at position {position}: candidate {got}, reference {want} "
        f"({len(tokens)} vs {len(reference)} tokens)"
    )


if __name__ == "__main__":
    sys.exit(main())
