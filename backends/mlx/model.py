from pathlib import Path


def prepare_model(path: Path, models_dir: Path) -> Path:
    """mlx-lm folders load as they are; a GGUF file is converted once into one, cached under models_dir."""
    if path.suffix == ".gguf":
        from backends.mlx import gguf

        return gguf.convert(path, models_dir)
    return path
