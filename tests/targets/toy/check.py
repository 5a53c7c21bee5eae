import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def run(command: list[str]) -> list[list[int]]:
    out = subprocess.run(command, capture_output=True, text=True, timeout=100)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no error output"])[-1][-300:]
        print(f"CHECK FAIL {Path(command[1]).name} exited {out.returncode}: {last}")
        sys.exit(1)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("[")]


def main() -> None:
    p = argparse.ArgumentParser()
    for name in ("stack", "model", "inputs", "cache"):
        p.add_argument(f"--{name}", required=True)
    a = p.parse_args()
    key = hashlib.sha256((Path(a.inputs) / "prompts.json").read_bytes()).hexdigest()[:16]
    cached = Path(a.cache) / f"reference-{key}.json"
    if not cached.exists():
        reference = run([sys.executable, str(HERE / "reference" / "reference.py"), a.model, a.inputs])
        cached.write_text(json.dumps(reference))
    expected = json.loads(cached.read_text())
    got = run([sys.executable, str(Path(a.stack) / "decode.py"), "--model", a.model, "--inputs", a.inputs])
    failures = [i for i, (e, g) in enumerate(zip(expected, got, strict=False)) if e != g]
    if len(got) != len(expected):
        failures.append(len(got))
    for i in failures:
        print(f"CHECK FAIL prompt {i}: tokens differ from the reference")
    print("CHECK PASS" if not failures else "")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
