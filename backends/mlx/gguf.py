"""Convert a llama-architecture GGUF file into an mlx-lm model folder, keeping its quantization."""

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import cast

FORMAT_VERSION = "1"
GROUP_SIZE = 32
SUPPORTED_BITS = (2, 3, 4, 5, 6, 8)

LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
TOP_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}


def convert(gguf: Path, models_dir: Path) -> Path:
    gguf = Path(gguf)
    if not gguf.is_file():
        raise FileNotFoundError(f"GGUF model file not found: {gguf}")
    target = Path(models_dir) / f"{gguf.stem}-{content_hash(gguf)}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        staging.chmod(0o755)
        build(gguf, staging)
        os.rename(staging, target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def content_hash(path: Path) -> str:
    digest = hashlib.sha256(FORMAT_VERSION.encode())
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def build(gguf: Path, out: Path) -> None:
    import mlx.core as mx

    tensors, metadata = cast(tuple[dict, dict], mx.load(str(gguf), return_metadata=True))
    arch = scalar(metadata["general.architecture"])
    if arch != "llama":
        raise ValueError(f"{gguf.name}: architecture {arch!r} is not supported, only llama")
    config = model_config(metadata, tensors)
    weights = unpermute_qk(rename(tensors), config)
    config["quantization"] = quantization(weights)
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_tokenizer(gguf, metadata, out)


def scalar(value):
    if hasattr(value, "item"):
        return value.item()
    return value


def model_config(metadata: dict, tensors: dict) -> dict:
    def meta(key, default=None):
        value = metadata.get(f"llama.{key}", default)
        if value is None:
            raise KeyError(f"GGUF metadata lacks llama.{key}")
        return scalar(value)

    heads = meta("attention.head_count")
    hidden = meta("embedding_length")
    vocab = len(metadata["tokenizer.ggml.tokens"])
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": meta("block_count"),
        "intermediate_size": meta("feed_forward_length"),
        "num_attention_heads": heads,
        "num_key_value_heads": meta("attention.head_count_kv", heads),
        "head_dim": hidden // heads,
        "rms_norm_eps": float(f"{meta('attention.layer_norm_rms_epsilon'):.6g}"),
        "rope_theta": float(meta("rope.freq_base", 10000.0)),
        "rope_traditional": False,
        "max_position_embeddings": meta("context_length"),
        "vocab_size": vocab,
        "tie_word_embeddings": "output.weight" not in tensors,
        "bos_token_id": scalar(metadata.get("tokenizer.ggml.bos_token_id", 1)),
        "eos_token_id": scalar(metadata.get("tokenizer.ggml.eos_token_id", 2)),
    }


def rename(tensors: dict) -> dict:
    renamed = {}
    for name, value in tensors.items():
        renamed[mlx_name(name)] = value
    return renamed


def mlx_name(name: str) -> str:
    base, _, suffix = name.rpartition(".")
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)", base)
    if match and match.group(2) in LAYER_NAMES:
        return f"model.layers.{match.group(1)}.{LAYER_NAMES[match.group(2)]}.{suffix}"
    if base in TOP_NAMES:
        return f"{TOP_NAMES[base]}.{suffix}"
    raise ValueError(f"unknown GGUF tensor name: {name}")


def unpermute_qk(weights: dict, config: dict) -> dict:
    heads = {"q_proj": config["num_attention_heads"], "k_proj": config["num_key_value_heads"]}
    fixed = {}
    for name, value in weights.items():
        module = name.split(".")[-2]
        fixed[name] = unpermute_rows(value, heads[module]) if module in heads else value
    return fixed


def unpermute_rows(value, n_heads: int):
    rows = value.shape[0]
    rest = value.shape[1:]
    grouped = value.reshape(n_heads, rows // n_heads // 2, 2, *rest)
    return grouped.swapaxes(1, 2).reshape(rows, *rest)


def quantization(weights: dict) -> dict:
    per_module = {}
    for name, value in weights.items():
        if not name.endswith(".scales"):
            continue
        module = name.removesuffix(".scales")
        packed = weights[f"{module}.weight"].shape[-1]
        bits = packed * 32 // (value.shape[-1] * GROUP_SIZE)
        if bits not in SUPPORTED_BITS:
            raise ValueError(f"{module}: unsupported quantization ({bits} bits)")
        per_module[module] = {"group_size": GROUP_SIZE, "bits": bits, "mode": "affine"}
    common = Counter(spec["bits"] for spec in per_module.values()).most_common(1)[0][0]
    config = {"group_size": GROUP_SIZE, "bits": common, "mode": "affine"}
    config.update({m: s for m, s in per_module.items() if s["bits"] != common})
    return config


def save_tokenizer(gguf: Path, metadata: dict, out: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    template = metadata.get("tokenizer.chat_template")
    if template and not tokenizer.chat_template:
        tokenizer.chat_template = str(template)
    tokenizer.save_pretrained(str(out))
