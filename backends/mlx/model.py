from pathlib import Path


def prepare_model(path: Path, models_dir: Path) -> Path:
    """mlx-lm folders load as they are; a GGUF file is converted once into one, cached under models_dir."""
    if path.suffix == ".gguf":
        from backends.mlx import gguf

        return gguf.convert(path, models_dir)
    return path


def dense(path: Path, out: Path) -> Path:
    """path's model with its weights dequantized to fp32, written once to out. On a CPU, quantized matmuls have no
    BLAS: dense ones through OpenBLAS prefill ~10× faster."""
    if (out / "config.json").is_file():
        return out
    import json
    import shutil

    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.utils import dequantize_model, save_model

    model = load(str(path))[0]
    model = dequantize_model(model)
    model.set_dtype(mx.float32)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_model(partial, model)
    for entry in path.iterdir():
        if entry.is_file() and not entry.name.startswith("model") and entry.name != "config.json":
            shutil.copy2(entry, partial / entry.name)
    config = json.loads((path / "config.json").read_text())
    for key in ("quantization", "quantization_config"):
        config.pop(key, None)
    (partial / "config.json").write_text(json.dumps(config, indent=2))
    partial.rename(out)
    return out
