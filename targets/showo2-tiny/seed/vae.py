"""The VAE decoder: latents to an RGB image, on its own so that other backends can replace it (knob `vae`)."""

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from config import Config


def upsample(x):
    return mx.repeat(mx.repeat(x, 2, axis=1), 2, axis=2)


class VAEDecoder(nn.Module):
    """Latents (B, C, S, S) to RGB in [-1, 1] (B, 3, 4S, 4S); computes channels last inside."""

    def __init__(self, c: Config):
        super().__init__()
        c0, c1, c2 = c.vae_channels
        self.conv_in = nn.Conv2d(c.latent_channels, c0, 3, padding=1)
        self.up1 = nn.Conv2d(c0, c1, 3, padding=1)
        self.up2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.conv_out = nn.Conv2d(c2, 3, 3, padding=1)

    def __call__(self, z):
        x = nn.silu(self.conv_in(z.transpose(0, 2, 3, 1)))
        x = nn.silu(self.up1(upsample(x)))
        x = nn.silu(self.up2(upsample(x)))
        return mx.tanh(self.conv_out(x)).transpose(0, 3, 1, 2)


def load(kind: str, c: Config, weights: dict, model: Path | None = None):
    """The decoder the `vae` knob names, loaded from the model's weights (torch layout); coreml caches its export
    in the model folder."""
    if kind == "coreml" and model is not None:
        import coreml

        return coreml.load(c, weights, model)
    if kind != "mlx":
        raise ValueError(f"vae={kind}: only 'mlx' and 'coreml' (with the model folder) are available")
    decoder = VAEDecoder(c)
    own = {k.removeprefix("vae."): v for k, v in weights.items() if k.startswith("vae.")}
    decoder.load_weights([(k, v.transpose(0, 2, 3, 1) if v.ndim == 4 else v) for k, v in own.items()])
    mx.eval(decoder.parameters())
    return decoder
