"""The reference for showo2-mlx: the official Show-o2 pipeline (see official.py), behind the checker's interface."""

from pathlib import Path

from PIL import Image

from reference.official import Pipeline


class Reference:
    def __init__(self, model: Path):
        self.pipeline = Pipeline(model)

    def generate(self, prompt: str, seed: int, steps: int, guidance: float) -> Image.Image:
        return self.pipeline.generate(prompt, seed, steps, guidance)
