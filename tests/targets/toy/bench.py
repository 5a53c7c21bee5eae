import argparse
import importlib.util
import json
import time
from pathlib import Path

from mlx_lm.utils import load_model

p = argparse.ArgumentParser()
for name in ("stack", "model", "inputs"):
    p.add_argument(f"--{name}", required=True)
a = p.parse_args()
spec = importlib.util.spec_from_file_location("decode", Path(a.stack) / "decode.py")
stack = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stack)
model, _ = load_model(Path(a.model))
work = json.loads((Path(a.inputs) / "prompts.json").read_text())
settings = stack.knobs()
stack.decode(model, work["prompts"][0], 4, settings)
start = time.perf_counter()
for prompt in work["prompts"]:
    stack.decode(model, prompt, work["max_tokens"], settings)
print(f"METRIC decode_s {time.perf_counter() - start:.4f}")
