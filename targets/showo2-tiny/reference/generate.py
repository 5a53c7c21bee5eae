"""The PyTorch reference sampler, as plain as the official one: every Euler step runs the whole sequence (text
prefix included) through the SigLIP encoder, body and head for both classifier-free guidance branches.

python -m reference.generate --model MODEL_DIR --prompt TEXT --seed 0 --steps 20 --guidance 2.5 --out image.png
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from reference.config import Config, sequence_tokens
from reference.model import ShowO2, image_positions, omni_mask, patchify, unpatchify


def noise(config: Config, seed: int) -> np.ndarray:
    """The initial latents: shared with every stack, so that images can be compared pixel by pixel."""
    shape = (1, config.latent_channels, config.latent_size, config.latent_size)
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def to_image(rgb: np.ndarray) -> Image.Image:
    """RGB in [-1, 1], channels first, to an 8-bit image."""
    return Image.fromarray(np.clip(np.round((rgb.transpose(1, 2, 0) + 1) * 127.5), 0, 255).astype(np.uint8))


class Reference:
    def __init__(self, model: Path, threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        self.config = Config.load(model)
        self.model = ShowO2(self.config).eval()
        self.model.load_state_dict(load_file(str(Path(model) / "model.safetensors")))
        self.mask = omni_mask(self.config)
        self.image = image_positions(self.config)
        self.positions = torch.arange(self.config.seq_len)

    @torch.inference_mode()
    def generate(self, prompt: str, seed: int, steps: int, guidance: float) -> Image.Image:
        c, m = self.config, self.model
        branches = [sequence_tokens(c, prompt), sequence_tokens(c, "")]
        before = m.body.embed(torch.tensor([b for b, _ in branches]))
        after = m.body.embed(torch.tensor([a for _, a in branches]))
        z = torch.from_numpy(noise(c, seed))
        for i in range(steps):
            t = torch.full((2,), i / steps)
            velocity = self.velocity(before, after, z.repeat(2, 1, 1, 1), t)
            cond, uncond = velocity[:1], velocity[1:]
            z = z + (uncond + guidance * (cond - uncond)) / steps
        return to_image(m.vae(z)[0].numpy())

    def velocity(self, before, after, z, t):
        c, m = self.config, self.model
        patches = patchify(z, c.patch_size)
        image = m.patch(patches) + m.fuse(m.siglip(patches))
        hidden = m.body(torch.cat([before, image, after], dim=1), self.mask, self.positions)
        out = m.head(hidden, t, self.image, self.mask, self.positions)
        return unpatchify(out, c.latent_channels, c.patch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description="Show-o2 tiny: PyTorch reference")
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=2.5)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    Reference(args.model).generate(args.prompt, args.seed, args.steps, args.guidance).save(args.out)


if __name__ == "__main__":
    main()
