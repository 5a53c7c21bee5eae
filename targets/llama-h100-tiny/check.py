"""Judge a candidate: its greedy outputs on every prompt must equal the Transformers reference token for token.

python check.py --stack WORKSPACE --model MODEL --inputs PROMPTS_DIR --cache CACHE_DIR [--max-tokens 32]
                [--near-tie GAP] [--serve COMMAND]
Starts the stack's server (with --serve, the target's serve line as the Judge fills it in, plus --port 0, ready
once it prints {"ready": true, "port": N}; without, server.py on a free port) and sends every prompt at once (so
a batching stack is judged batched), alternately streamed and not, with temperature 0 and "return_token_ids":
true. Each answer's token ids and text must equal the reference's (reference/generate.py: Transformers
`generate`, do_sample=False, cached in CACHE_DIR). With --near-tie GAP > 0, an output may part from the reference
at a step where the reference's top-1 and top-2 logits were within GAP (a near tie that rounding in other kernels
may flip); the rest of that output is then not compared. With --serve, a server that passed then goes through
served.py's checks with the openai client (streamed and not, four clients at once, GET /v1/models, a malformed
body, a client gone mid-stream; exact text, so the prompts only without --near-tie). Prints CHECK FAIL <reason>
per failure (or CHECK PASS <summary>); exits 1 on any failure. The benchmark mixes some of these prompts into its
load and checks their token ids against the references cached here.
"""

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import threading
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import served  # noqa: E402
from stack import StackError, free_port, one_line, post, stack_server, stream  # noqa: E402

MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")
LIBRARIES = ("torch", "transformers", "tokenizers")


def main() -> int:
    args = parse_args()
    cases = json.loads((args.inputs / "prompts.json").read_text())
    expected = reference_outputs(args.model, cases, args.max_tokens, args.cache)
    if args.serve:
        found: list[tuple[list[str], int]] = []

        def own(port: int) -> list[str]:
            found.append(checked(*candidate_answers_at(port, args.model, cases, args.max_tokens), cases, expected,
                                 args.near_tie))  # fmt: skip
            return found[0][0]

        served_cases = [] if args.near_tie > 0 else served_expected(cases, expected, args.max_tokens)
        failures = served.check(args.serve, args.stack, served_cases, decoder(args.model), before=own)
        ties = found[0][1] if found else 0
    else:
        failures, ties = checked(*candidate_answers(args.stack, args.model, cases, args.max_tokens), cases, expected,
                                 args.near_tie)  # fmt: skip
    for failure in failures:
        print(f"CHECK FAIL {one_line(failure)}")
    if failures:
        return 1
    tokens = sum(len(expected[case["name"]]["tokens"]) for case in cases)
    parted = f"; {ties} parted at a near tie (gap ≤ {args.near_tie:g})" if ties else ""
    print(f"CHECK PASS {len(cases)} prompts, {tokens} tokens identical to the Transformers reference{parted}")
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="llama serving checker")
    parser.add_argument("--stack", required=True, type=Path)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--inputs", required=True, type=Path, help="folder with prompts.json")
    parser.add_argument("--cache", required=True, type=Path)
    parser.add_argument("--max-tokens", default=32, type=int)
    parser.add_argument("--near-tie", default=0.0, type=float, help="logit gap under which a divergence is allowed")
    parser.add_argument("--serve", default="", help="the command that starts the stack's OpenAI server (+ --port 0)")
    return parser.parse_args()


def checked(answers: dict, failures: list[str], cases: list, expected: dict, near_tie: float):
    """The failures (the answers' and those found comparing them) and how many parted at a near tie."""
    failures, ties = list(failures), 0
    for case in cases:
        name = case["name"]
        if name in answers:
            reason, tie = compare(answers[name], expected[name], near_tie)
            failures += [f"{name}: {reason}"] if reason else []
            ties += tie
    return failures, ties


def served_expected(cases: list, expected: dict, max_tokens: int) -> list[served.Expected]:
    return [
        served.Expected(case["name"], {"messages": case["messages"]}, expected[case["name"]]["tokens"],
                        expected[case["name"]]["text"], expected[case["name"]]["finish_reason"], max_tokens)
        for case in cases
    ]  # fmt: skip


def decoder(model: Path):
    """Token ids to text as the reference decodes them."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model)).decode


def reference_outputs(model: Path, cases: list, max_tokens: int, cache: Path) -> dict:
    path = cache / f"llama-reference-{max_tokens}-{reference_key(model, cases, max_tokens)}.json"
    if path.is_file():
        return json.loads(path.read_text())
    from reference.generate import Reference

    reference = Reference(model)
    outputs = {case["name"]: reference.generate(case["messages"], max_tokens) for case in cases}
    write_atomic(path, json.dumps(outputs))
    return outputs


def cached_references(model: Path, cases: list, cache: Path) -> dict | None:
    """The longest reference outputs the checker cached for these cases (any --max-tokens), or None."""
    named = [(int(m[1]), m[2]) for p in cache.glob("llama-reference-*.json")
             if (m := re.fullmatch(r"llama-reference-(\d+)-(\w+)\.json", p.name))]  # fmt: skip
    for tokens, key in sorted(named, reverse=True):
        if key == reference_key(model, cases, tokens):
            return json.loads((cache / f"llama-reference-{tokens}-{key}.json").read_text())
    return None


def reference_key(model: Path, cases: list, max_tokens: int) -> str:
    digest = hashlib.sha256(json.dumps([cases, max_tokens]).encode())
    for name in MODEL_FILES:
        if (model / name).is_file():
            digest.update((model / name).read_bytes())
    for weights in sorted(model.glob("*.safetensors")):
        digest.update(f"{weights.name} {weights.stat().st_size}".encode())
    for path in sorted((HERE / "reference").glob("*.py")):
        digest.update(path.read_bytes())
    for library in LIBRARIES:
        digest.update(f"{library}=={version(library)}".encode())
    return digest.hexdigest()[:16]


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    with os.fdopen(handle, "w") as f:
        f.write(text)
    os.replace(temp, path)


def candidate_answers(stack: Path, model: Path, cases: list, max_tokens: int) -> tuple[dict, list[str]]:
    port = free_port()
    with stack_server(stack, model, port) as server:
        try:
            server.wait_ready()
        except StackError as error:
            return {}, [f"stack did not start: {error}"]
        return candidate_answers_at(port, model, cases, max_tokens)


def candidate_answers_at(port: int, model: Path, cases: list, max_tokens: int) -> tuple[dict, list[str]]:
    """Every prompt sent at once to the server on port, alternately streamed and not."""
    answers: dict = {}
    failures: list[str] = []

    def ask(i: int, case: dict) -> None:
        body = {"model": model.name, "messages": case["messages"], "max_tokens": max_tokens, "temperature": 0,
                "return_token_ids": True}  # fmt: skip
        try:
            answers[case["name"]] = streamed(port, body) if i % 2 else plain(port, body)
        except Exception as error:  # noqa: BLE001 - whatever the answer broke, the case fails
            failures.append(f"{case['name']}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=ask, args=(i, case)) for i, case in enumerate(cases)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers, failures


def plain(port: int, body: dict) -> dict:
    choice = post(port, "/v1/chat/completions", body)["choices"][0]
    return {"tokens": choice.get("token_ids"), "text": choice["message"]["content"], "finish": choice["finish_reason"]}


def streamed(port: int, body: dict) -> dict:
    tokens, text, finish, ids = [], "", None, False
    for _, event in stream(port, "/v1/chat/completions", body):
        for choice in event.get("choices", []):
            text += (choice.get("delta") or {}).get("content") or ""
            ids = ids or "token_ids" in choice
            tokens += choice.get("token_ids") or []
            finish = choice.get("finish_reason") or finish
    return {"tokens": tokens if ids else None, "text": text, "finish": finish}


def compare(answer: dict, expected: dict, near_tie: float) -> tuple[str, bool]:
    """The reason the answer differs from the reference ('' when it does not), and whether it parted at a tie."""
    tokens, reference = answer["tokens"], expected["tokens"]
    if not isinstance(tokens, list):
        return "answer lacks token_ids (the request asked for return_token_ids)", False
    if tokens == reference:
        if answer["text"] != expected["text"]:
            return f"text {answer['text'][:60]!r} differs from the reference's {expected['text'][:60]!r}", False
        if answer["finish"] != expected["finish_reason"]:
            return f"finish_reason {answer['finish']!r}, reference {expected['finish_reason']!r}", False
        return "", False
    return token_difference(tokens, reference, expected["gaps"], near_tie)


def token_difference(tokens: list, reference: list, gaps: list, near_tie: float) -> tuple[str, bool]:
    """Where greedy token ids part from the reference's ('' when they do not), and whether at a near tie."""
    if tokens == reference:
        return "", False
    at = next((i for i, (a, b) in enumerate(zip(tokens, reference, strict=False)) if a != b), None)
    at = min(len(tokens), len(reference)) if at is None else at
    if near_tie > 0 and at < len(gaps) and gaps[at] <= near_tie:
        return "", True
    got = tokens[at] if at < len(tokens) else "end"
    want = reference[at] if at < len(reference) else "end"
    gap = f", reference top-2 gap {gaps[at]:.3g}" if at < len(gaps) else ""
    counts = f"{len(tokens)} vs {len(reference)} tokens{gap}"
    return f"first differing token at {at}: candidate {got}, reference {want} ({counts})", False


if __name__ == "__main__":
    sys.exit(main())
