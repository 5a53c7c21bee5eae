"""Every dimension of the Show-o2-style tiny model (read from the model folder's config.json) and its tokenizer."""

import json
from dataclasses import dataclass, fields
from pathlib import Path

PAD, BOS, BOI, EOI = 0, 1, 2, 3
BYTE_OFFSET = 4


@dataclass(frozen=True)
class Config:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    rope_theta: float
    rms_norm_eps: float
    text_len: int
    tail_len: int
    latent_channels: int
    latent_size: int
    patch_size: int
    siglip_hidden: int
    siglip_layers: int
    siglip_heads: int
    siglip_mlp: int
    head_hidden: int
    head_layers: int
    head_heads: int
    head_mlp: int
    time_dim: int
    vae_channels: tuple[int, ...]
    seed: int

    @classmethod
    def load(cls, model: Path) -> "Config":
        raw = json.loads((Path(model) / "config.json").read_text())
        values = {f.name: raw[f.name] for f in fields(cls)}
        return cls(**values | {"vae_channels": tuple(raw["vae_channels"])})

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def grid(self) -> int:
        return self.latent_size // self.patch_size

    @property
    def image_tokens(self) -> int:
        return self.grid**2

    @property
    def patch_dim(self) -> int:
        return self.latent_channels * self.patch_size**2

    @property
    def prefix_len(self) -> int:
        """Text tokens plus BOI: the part of the sequence that no denoising step changes."""
        return self.text_len + 1

    @property
    def seq_len(self) -> int:
        return self.prefix_len + self.image_tokens + self.tail_len

    @property
    def image_size(self) -> int:
        return self.latent_size * 2 ** (len(self.vae_channels) - 1)


def tokenize(config: Config, prompt: str) -> list[int]:
    """Byte-level: BOS, the prompt's UTF-8 bytes (cut to fit), PAD up to text_len."""
    ids = [BOS] + [b + BYTE_OFFSET for b in prompt.encode()][: config.text_len - 1]
    return ids + [PAD] * (config.text_len - len(ids))


def sequence_tokens(config: Config, prompt: str) -> tuple[list[int], list[int]]:
    """The token ids before the image span (text + BOI) and after it (EOI + PAD)."""
    return tokenize(config, prompt) + [BOI], [EOI] + [PAD] * (config.tail_len - 1)
