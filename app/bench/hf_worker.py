"""Baseline worker: transformers `generate`, greedy, as JSON lines on stdin/stdout (the predicted-outputs reference).

python -m app.bench.hf_worker --bundle DIR --model DIR [--lookup N] [--draft DIR] [--threads N]
Plain: the bundle's reference/generate.py as the checker runs it. --lookup N: transformers' prompt lookup
(prompt_lookup_num_tokens=N, drafts copied from the prompt). --draft DIR: transformers' assisted generation with
that draft model. Answers {"id", "prompt", "prediction", "max_tokens"} with {"id", "tokens", "text",
"finish_reason"}; the prediction is not used by any of them.
"""

import argparse
import sys
from pathlib import Path

from app.bench import protocol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, type=Path, help="the target bundle whose reference/ to use")
    parser.add_argument("--model", required=True, type=Path, help="Hugging Face model folder")
    parser.add_argument("--lookup", type=int, default=0, help="prompt lookup: tokens drafted per step (0: off)")
    parser.add_argument("--draft", type=Path, help="draft model folder for assisted generation")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    sys.stdout = sys.stderr
    import torch
    from transformers import AutoModelForCausalLM

    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(args.bundle.resolve()))
    from reference.generate import Reference

    reference = Reference(args.model)
    options: dict = {"prompt_lookup_num_tokens": args.lookup} if args.lookup else {}
    if args.draft:
        draft = AutoModelForCausalLM.from_pretrained(str(args.draft), dtype="auto", device_map=reference.device)
        options["assistant_model"] = draft.eval()

    def generate(raw: dict) -> dict:
        return {"id": raw["id"], **reference.generate(raw["prompt"], int(raw["max_tokens"]), **options)}

    protocol.serve(generate)


if __name__ == "__main__":
    main()
