"""Turn a GGUF file into a Hugging Face model folder (safetensors, config, tokenizer) for torch stacks."""

import os
import shutil
import tempfile
from pathlib import Path

from backends.mlx.gguf import content_hash


def prepare_model(path: Path, models_dir: Path) -> Path:
    """Hugging Face folders and hub snapshots load as they are; a GGUF file is dequantized once into a folder."""
    return convert(path, models_dir) if Path(path).suffix == ".gguf" else path


def convert(gguf: Path, models_dir: Path) -> Path:
    gguf = Path(gguf)
    if not gguf.is_file():
        raise FileNotFoundError(f"GGUF model file not found: {gguf}")
    target = Path(models_dir) / "hf" / f"{gguf.stem}-{content_hash(gguf)}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=".converting-"))
    try:
        _write(gguf, scratch)
        os.replace(scratch, target)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return target


def _write(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # transformers refuses to save a model loaded from GGUF; a fresh one with the same weights saves normally.
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
