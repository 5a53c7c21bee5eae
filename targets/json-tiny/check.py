"""Judge a candidate stack: its outputs must equal the reference token for token and be valid JSON.

python check.py --stack WORKSPACE --model MODEL_DIR --inputs CASES_DIR --cache CACHE_DIR [--serve COMMAND]
Reference outputs are computed once and kept in CACHE_DIR, where the benchmark finds them to check the answers it
timed. The stack starts through the launch prefix in $ATELIER_CONFINE and gets its cases only as requests.
With --serve (the target's serve line, filled in by the Judge), a stack whose serve.py passed is also checked
through the server that command starts (served.py: the openai client, streamed and not, several clients at once).
Prints CHECK FAIL <reason> per failure (or CHECK PASS <summary>); exits 1 on any failure.
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import jsonschema

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import served  # noqa: E402
from workload import Case, Stack, StackError, load_cases, one_line  # noqa: E402

MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
LIBRARIES = ("mlx", "mlx-lm", "xgrammar", "transformers", "tokenizers")


def main() -> int:
    args = parse_args()
    cases = load_cases(args.inputs, args.model)
    expected = reference_outputs(args.model, cases, args.cache)
    failures = [f"{name}: reference output is invalid: {reason}" for name, reason in invalid(cases, expected)]
    draft = Path(args.draft) if args.draft else None
    failures += candidate_failures(args.stack, args.model, draft, cases, expected)
    if args.serve and not failures:
        failures += served.check(args.serve, args.stack, served_cases(cases, expected), decoder(args.model))
    for failure in failures:
        print(f"CHECK FAIL {one_line(failure)}")
    if failures:
        return 1
    tokens = sum(len(expected[case.name]["tokens"]) for case in cases)
    server = ", and through its server" if args.serve else ""
    print(f"CHECK PASS {len(cases)} schemas, {tokens} tokens identical to the reference{server}")
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="json-tiny checker")
    parser.add_argument("--stack", required=True, type=Path)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--draft", default="", help="draft model folder, passed on to the stack (empty: none)")
    parser.add_argument("--inputs", required=True, type=Path)
    parser.add_argument("--cache", required=True, type=Path)
    parser.add_argument("--serve", default="", help="the command that starts the stack's OpenAI server (+ --port 0)")
    return parser.parse_args()


def reference_path(model: Path, cases: list[Case], cache: Path) -> Path:
    return cache / f"json-tiny-reference-{reference_key(model, cases)}.json"


def cached_reference(model: Path, cases: list[Case], cache: Path) -> dict | None:
    path = reference_path(model, cases, cache)
    return json.loads(path.read_text()) if path.is_file() else None


def reference_outputs(model: Path, cases: list[Case], cache: Path) -> dict:
    path = reference_path(model, cases, cache)
    if path.is_file():
        return json.loads(path.read_text())
    from reference.generate import Reference

    reference = Reference(model)
    outputs = {case.name: reference.generate(case.prompt, case.grammar, case.max_tokens) for case in cases}
    write_atomic(path, json.dumps(outputs))
    return outputs


def reference_key(model: Path, cases: list[Case]) -> str:
    from importlib.metadata import version

    digest = hashlib.sha256()
    for name in MODEL_FILES:
        digest.update(file_digest(model / name))
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


def candidate_failures(
    workspace: Path, model: Path, draft: Path | None, cases: list[Case], expected: dict
) -> list[str]:
    failures = []
    with Stack(workspace, model, draft) as stack:
        try:
            stack.wait_ready()
        except StackError as error:
            return [f"stack did not start: {error}"]
        for case in cases:
            try:
                answer = stack.ask(case.request())
            except StackError as error:
                failures.append(f"{case.name}: {error}")
                if stack.process.poll() is not None:
                    break
                continue
            failures += [f"{case.name}: {reason}" for reason in compare(case, answer, expected[case.name])]
    return failures


def served_cases(cases: list[Case], expected: dict) -> list[served.Expected]:
    """The cases a client can send (those with messages), as the OpenAI API asks them: the bounded schema that the
    reference decoded under, as response_format."""
    return [
        served.Expected(
            case.name,
            {"messages": case.messages, "response_format": {"type": "json_schema", "json_schema": {
                "name": "case", "schema": case.grammar, "strict": True}}},
            expected[case.name]["tokens"], expected[case.name]["text"], expected[case.name]["finish_reason"],
            case.max_tokens,
        )
        for case in cases if case.messages
    ]  # fmt: skip


def decoder(model: Path):
    """Token ids to text as the reference decodes them (its Hugging Face tokenizer)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model)).decode


def compare(case: Case, answer: dict, expected: dict) -> list[str]:
    reasons = output_problems(case, answer)
    tokens, reference = answer.get("tokens"), expected["tokens"]
    if tokens != reference:
        reasons.append(first_difference(tokens, reference))
    elif answer.get("text") != expected["text"]:
        reasons.append(f"text {answer.get('text')!r} differs from the reference text {expected['text']!r}")
    return reasons


def output_problems(case: Case, answer: dict) -> list[str]:
    tokens, text = answer.get("tokens"), answer.get("text")
    if not isinstance(tokens, list) or not isinstance(text, str):
        return ["answer lacks a tokens list or a text string"]
    if answer.get("finish_reason") != "stop" or len(tokens) >= case.max_tokens:
        return [f"hit max_tokens ({case.max_tokens}) without finishing: {text[:80]!r}"]
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        return [f"output does not parse as JSON ({error.msg}): {text[:80]!r}"]
    try:
        jsonschema.validate(value, case.schema)
    except jsonschema.ValidationError as error:
        return [f"output does not match its schema: {error.message}"]
    return []


def first_difference(tokens, reference: list[int]) -> str:
    if not isinstance(tokens, list):
        return "answer has no token list"
    position = next(
        (i for i, (a, b) in enumerate(zip(tokens, reference, strict=False)) if a != b), min(len(tokens), len(reference))
    )
    got = tokens[position] if position < len(tokens) else "end"
    want = reference[position] if position < len(reference) else "end"
    return (
        f"first differing token at position {position}: candidate {got}, reference {want} "
        f"({len(tokens)} vs {len(reference)} tokens)"
    )


def invalid(cases: list[Case], expected: dict) -> list[tuple[str, str]]:
    problems = []
    for case in cases:
        for reason in output_problems(case, expected[case.name]):
            problems.append((case.name, reason))
    return problems


if __name__ == "__main__":
    sys.exit(main())
