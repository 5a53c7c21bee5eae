"""The VAE decoder through Core ML (knob vae = "coreml"): a torch twin built from the model's VAE weights, exported
with torch.export and converted by coremltools to an fp32 mlprogram .mlpackage, cached in the model folder (else a
temporary folder) under a name keyed by the weights and the coremltools version. Core ML predicts on macOS only:
elsewhere the export still runs, then loading says that this machine cannot decode with it.
"""

import contextlib
import hashlib
import io
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from config import Config

INPUT, OUTPUT = "latents", "rgb"


class Unavailable(RuntimeError):
    pass


def twin(c: Config, weights: dict[str, np.ndarray]):
    """The decoder in torch (same layers as vae.VAEDecoder, channels first), loaded with the model's weights."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            c0, c1, c2 = c.vae_channels
            self.conv_in = nn.Conv2d(c.latent_channels, c0, 3, padding=1)
            self.up1 = nn.Conv2d(c0, c1, 3, padding=1)
            self.up2 = nn.Conv2d(c1, c2, 3, padding=1)
            self.conv_out = nn.Conv2d(c2, 3, 3, padding=1)

        def forward(self, z):
            x = F.silu(self.conv_in(z))
            x = F.silu(self.up1(F.interpolate(x, scale_factor=2.0, mode="nearest")))
            x = F.silu(self.up2(F.interpolate(x, scale_factor=2.0, mode="nearest")))
            return torch.tanh(self.conv_out(x))

    decoder = Decoder().eval()
    own = {k.removeprefix("vae."): torch.from_numpy(np.array(v)) for k, v in weights.items() if k.startswith("vae.")}
    decoder.load_state_dict(own)
    return decoder


def coremltools():
    logging.getLogger("coremltools").setLevel(logging.ERROR)  # import-time notes about the missing macOS runtime
    import coremltools as ct

    return ct


def latent_shape(c: Config) -> tuple[int, int, int, int]:
    return (1, c.latent_channels, c.latent_size, c.latent_size)


def cache_folder(model: Path) -> Path:
    folder = Path(model) / "coreml"
    try:
        folder.mkdir(exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="showo2-coreml-"))


def export(c: Config, weights: dict[str, np.ndarray], folder: Path) -> Path:
    """The .mlpackage of the VAE decoder in folder, converted once."""
    import torch

    ct = coremltools()
    digest = hashlib.sha256(ct.__version__.encode())
    for name in sorted(k for k in weights if k.startswith("vae.")):
        digest.update(name.encode() + np.ascontiguousarray(np.array(weights[name])).tobytes())
    path = Path(folder) / f"vae-{digest.hexdigest()[:16]}.mlpackage"
    if path.exists():
        return path
    shape = latent_shape(c)
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):  # deprecations, progress bars
        warnings.simplefilter("ignore")
        program = torch.export.export(twin(c, weights), (torch.zeros(shape),)).run_decompositions({})
        model = ct.convert(
            program, inputs=[ct.TensorType(name=INPUT, shape=shape)], outputs=[ct.TensorType(name=OUTPUT)],
            convert_to="mlprogram", compute_precision=ct.precision.FLOAT32,
            minimum_deployment_target=ct.target.macOS13,
        )  # fmt: skip
    partial = path.with_name(f".{path.stem}-{os.getpid()}.mlpackage")
    shutil.rmtree(partial, ignore_errors=True)
    model.save(str(partial))
    try:
        os.replace(partial, path)
    except OSError:  # another process saved it first
        shutil.rmtree(partial, ignore_errors=True)
        if not path.exists():
            raise
    return path


class CoreMLDecoder:
    """Latents (1, C, S, S) to RGB in [-1, 1] (1, 3, 4S, 4S), predicted by Core ML."""

    def __init__(self, path: Path):
        self.path = path
        self.model = coremltools().models.MLModel(str(path), compute_units=coremltools().ComputeUnit.CPU_AND_GPU)

    def __call__(self, z) -> np.ndarray:
        return self.model.predict({INPUT: np.array(z, dtype=np.float32)})[OUTPUT]


def load(c: Config, weights: dict, model: Path) -> CoreMLDecoder:
    path = export(c, weights, cache_folder(model))
    if sys.platform != "darwin":
        raise Unavailable(f"vae=coreml: exported {path}, but Core ML predicts only on macOS (this is {sys.platform})")
    return CoreMLDecoder(path)
