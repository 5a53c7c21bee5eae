"""Text to image with the MLX port: Euler steps of flow matching under classifier-free guidance, per the knobs."""

import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import vae
from config import Config, sequence_tokens
from knobs import Knobs
from model import ShowO2, omni_mask, patchify, unpatchify


def noise(c: Config, seed: int) -> np.ndarray:
    shape = (1, c.latent_channels, c.latent_size, c.latent_size)
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def quantize(module: nn.Module, bits: str) -> None:
    if bits != "none":
        nn.quantize(module, group_size=64, bits=int(bits), class_predicate=lambda _, m: isinstance(m, nn.Linear))


class Sampler:
    def __init__(self, model: Path, knobs: Knobs):
        self.c, self.knobs = Config.load(model), knobs
        weights = mx.load(str(Path(model) / "model.safetensors"))
        self.model = ShowO2(self.c)
        self.model.load_weights([(k, v) for k, v in weights.items() if not k.startswith("vae.")])
        quantize(self.model.head, knobs.head_bits)
        quantize(self.model.body, knobs.body_bits)
        mx.eval(self.model.parameters())
        self.vae = vae.load(knobs.vae, self.c, weights, model)
        self.length = self.c.prefix_len + self.c.image_tokens + (0 if knobs.prefill_trim == "on" else self.c.tail_len)
        self.mask = omni_mask(self.c, self.length)
        positions = mx.arange(self.length)
        self.image = (positions >= self.c.prefix_len) & (positions < self.c.prefix_len + self.c.image_tokens)
        wrap = mx.compile if knobs.compile == "on" else (lambda f: f)
        self.body_step, self.head_step = wrap(self.run_body), wrap(self.run_head)

    def generate(self, prompt: str, seed: int, steps: int, guidance: float) -> tuple[np.ndarray, dict]:
        c, k, m = self.c, self.knobs, self.model
        timings = {"body_s": 0.0, "head_s": 0.0, "vae_s": 0.0}
        started = time.perf_counter()
        branches = [sequence_tokens(c, prompt), sequence_tokens(c, "")]
        before = m.body.embed(mx.array([b for b, _ in branches]))
        after = m.body.embed(mx.array([a for _, a in branches]))[:, : self.length - c.prefix_len - c.image_tokens]
        prefix = self.prefix(before)
        mx.eval(before, after, prefix)
        timings["body_s"] += time.perf_counter() - started
        z, uncond, features = mx.array(noise(c, seed)), None, None
        for i in range(steps):
            n = 2 if i % int(k.cfg_stride) == 0 else 1
            tick = time.perf_counter()
            patches = patchify(z, c.patch_size)
            features = self.features(patches, n, features)
            image = m.patch(patches) + m.fuse(features)
            hidden = self.body_step(before[:n], image, after[:n], cut(prefix["body"], n))
            mx.eval(hidden)
            tock = time.perf_counter()
            out = self.head_step(hidden, mx.full((n,), i / steps), cut(prefix["hidden"], n), cut(prefix["head"], n))
            velocity = unpatchify(out, c.latent_channels, c.patch_size)
            cond, uncond = velocity[:1], velocity[1:] if n == 2 else uncond
            z = z + (uncond + guidance * (cond - uncond)) / steps
            mx.eval(z, uncond)
            timings["body_s"] += tock - tick
            timings["head_s"] += time.perf_counter() - tock
        tick = time.perf_counter()
        rgb = np.array(self.vae(z)[0])
        timings["vae_s"] = time.perf_counter() - tick
        timings["total_s"] = time.perf_counter() - started
        return to_pixels(rgb), timings

    def prefix(self, before) -> dict:
        """Keys, values and hidden states of the text prefix, as the cache knobs ask for them."""
        if self.knobs.body_cache != "on":
            return {"body": [], "hidden": None, "head": []}
        p = self.c.prefix_len
        hidden, body = self.model.body(before, self.mask[:p, :p])
        head = self.model.head.prefix(hidden, self.mask[:p, :p]) if self.knobs.head_cache == "on" else []
        return {"body": body, "hidden": hidden, "head": head}

    def features(self, patches, n: int, previous):
        mode = self.knobs.siglip
        if mode == "every_branch":
            return self.model.siglip(mx.repeat(patches, n, axis=0))
        if mode == "first" and previous is not None:
            return previous[:1]
        return self.model.siglip(patches)

    def run_body(self, before, image, after, cache):
        image = mx.broadcast_to(image, (before.shape[0], *image.shape[1:]))
        if not cache:
            hidden, _ = self.model.body(mx.concatenate([before, image, after], axis=1), self.mask)
            return hidden
        p = self.c.prefix_len
        hidden, _ = self.model.body(mx.concatenate([image, after], axis=1), self.mask[p:], p, cache)
        return hidden

    def run_head(self, hidden, t, prefix_hidden, cache):
        p, n = self.c.prefix_len, self.c.image_tokens
        if cache:
            image = None if self.knobs.prefill_trim == "on" else self.image[p:]
            return self.model.head(hidden, t, image, (0, n), self.mask[p:], p, cache)
        if prefix_hidden is not None:
            hidden = mx.concatenate([prefix_hidden, hidden], axis=1)
        return self.model.head(hidden, t, self.image, (p, p + n), self.mask)


def cut(cache, n: int):
    if cache is None or isinstance(cache, mx.array):
        return None if cache is None else cache[:n]
    return [(k[:n], v[:n]) for k, v in cache]


def to_pixels(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.round((rgb.transpose(1, 2, 0) + 1) * 127.5), 0, 255).astype(np.uint8)
