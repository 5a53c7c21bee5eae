import json
import sys
from pathlib import Path

import mlx.core as mx
from mlx_lm.utils import load_model


def main(model_dir: str, inputs: str) -> None:
    model, _ = load_model(Path(model_dir))
    work = json.loads((Path(inputs) / "prompts.json").read_text())
    for prompt in work["prompts"]:
        tokens = list(prompt)
        for _ in range(work["max_tokens"]):
            tokens.append(mx.argmax(model(mx.array([tokens]))[0, -1]).item())
        print(json.dumps(tokens[len(prompt) :]))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
