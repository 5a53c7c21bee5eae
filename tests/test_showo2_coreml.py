import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from app import model
from app.target import load

TARGET = Path(__file__).resolve().parents[1] / "targets" / "showo2-tiny"
SEED_MODULES = ("config", "coreml", "vae", "model", "knobs", "sampler", "blas")


@pytest.fixture(scope="module")
def showo2_model(tmp_path_factory) -> Path:
    t = load(str(TARGET))
    return model.prepare(t.model, t.dir, t.executor, tmp_path_factory.mktemp("showo2-home") / "models")


@pytest.fixture(scope="module")
def seed():
    path = str(TARGET / "seed")
    sys.path.insert(0, path)
    try:
        import config
        import coreml
        import mlx.core as mx
        import vae

        yield SimpleNamespace(mx=mx, config=config, coreml=coreml, vae=vae)
    finally:
        sys.path.remove(path)
        for name in SEED_MODULES:
            sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def parts(seed, showo2_model):
    c = seed.config.Config.load(showo2_model)
    weights = seed.mx.load(str(showo2_model / "model.safetensors"))
    z = np.random.default_rng(1).standard_normal(seed.coreml.latent_shape(c), dtype=np.float32)
    return SimpleNamespace(c=c, weights=weights, z=z, mlx=seed.vae.load("mlx", c, weights))


def test_export_writes_an_mlpackage_with_the_decoder_shapes(seed, parts, tmp_path):
    path = seed.coreml.export(parts.c, parts.weights, tmp_path)
    assert path.suffix == ".mlpackage" and (path / "Manifest.json").is_file()
    spec = seed.coreml.coremltools().utils.load_spec(str(path))
    assert spec.WhichOneof("Type") == "mlProgram"
    (latents,), (rgb,) = spec.description.input, spec.description.output
    assert (latents.name, list(latents.type.multiArrayType.shape)) == ("latents", [1, 4, 16, 16])
    assert (rgb.name, list(rgb.type.multiArrayType.shape)) == ("rgb", [1, 3, 64, 64])
    assert seed.coreml.export(parts.c, parts.weights, tmp_path) == path
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_the_exported_torch_twin_decodes_as_the_mlx_decoder(seed, parts):
    import torch

    with torch.no_grad():
        twin = seed.coreml.twin(parts.c, parts.weights)(torch.from_numpy(parts.z)).numpy()
    np.testing.assert_allclose(twin, np.array(parts.mlx(seed.mx.array(parts.z))), atol=1e-5)


@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML predicts on macOS")
def test_coreml_decoder_off_macos_is_exported_then_refused(seed, parts, showo2_model):
    with pytest.raises(seed.coreml.Unavailable, match=r"exported .*\.mlpackage, but Core ML predicts only on macOS"):
        seed.vae.load("coreml", parts.c, parts.weights, showo2_model)
    assert list((showo2_model / "coreml").glob("vae-*.mlpackage"))


@pytest.mark.skipif(sys.platform != "darwin", reason="Core ML predicts on macOS only")
def test_coreml_decoder_matches_the_mlx_decoder_on_macos(seed, parts, showo2_model):
    decoder = seed.vae.load("coreml", parts.c, parts.weights, showo2_model)
    np.testing.assert_allclose(decoder(parts.z), np.array(parts.mlx(seed.mx.array(parts.z))), atol=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML predicts on macOS")
def test_stack_with_vae_coreml_exits_at_start_with_one_line_off_macos(showo2_model, tmp_path):
    stack = tmp_path / "stack"
    shutil.copytree(TARGET / "seed", stack, ignore=shutil.ignore_patterns("__pycache__"))
    knobs = stack / "atelier.knobs.toml"
    text = knobs.read_text()
    knobs.write_text(
        text.replace('values = ["mlx", "coreml"]\ndefault = "mlx"', 'values = ["mlx", "coreml"]\ndefault = "coreml"')
    )
    done = subprocess.run([sys.executable, "serve.py", "--model", str(showo2_model)], cwd=stack, input="",
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"serve.py: vae=coreml: exported {next((showo2_model / 'coreml').glob('*.mlpackage'))}, "
        f"but Core ML predicts only on macOS (this is {sys.platform})"
    ]
