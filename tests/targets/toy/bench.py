"""The toy benchmark: the prompts in a fresh random order, timed from outside the candidate; a random sample of
the answers is checked against the reference the checker cached."""

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from check import Stack  # noqa: E402

p = argparse.ArgumentParser()
for name in ("stack", "model", "inputs", "cache"):
    p.add_argument(f"--{name}", required=True)
a = p.parse_args()
work = json.loads((Path(a.inputs) / "prompts.json").read_text())
key = hashlib.sha256((Path(a.inputs) / "prompts.json").read_bytes()).hexdigest()[:16]
cached = Path(a.cache) / f"reference-{key}.json"
if not cached.exists():
    print("CHECK FAIL benchmark: no reference outputs in the cache for these inputs (run the checker first)")
    sys.exit(1)
expected = json.loads(cached.read_text())
rng = random.SystemRandom()
order = rng.sample(range(len(work["prompts"])), len(work["prompts"]))
sampled = rng.sample(order, min(len(order), max(2, len(order) // 4)))
stack = Stack(a.stack, a.model)
stack.ask(-1, work["prompts"][0], 4)
answers = {}
start = time.perf_counter()
for i in order:
    answers[i] = stack.ask(i, work["prompts"][i], work["max_tokens"])
elapsed = time.perf_counter() - start
stack.close()
wrong = [i for i in sampled if answers[i] != expected[i]]
for i in wrong:
    print(f"CHECK FAIL benchmark: prompt {i} differs from the reference")
if wrong:
    sys.exit(1)
print(f"METRIC decode_s {elapsed:.4f}")
print(f"METRIC checked_outputs {len(sampled)}")
