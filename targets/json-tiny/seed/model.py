"""A llama decoder in MLX, loaded from an mlx-lm model folder."""

import json
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_unflatten
from mlx_lm.models.base import scaled_dot_product_attention
from mlx_lm.models.cache import KVCache, QuantizedKVCache


@dataclass
class ModelConfig:
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    rms_norm_eps: float
    vocab_size: int
    rope_theta: float = 10000.0
    rope_traditional: bool = False
    tie_word_embeddings: bool = True

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def read(cls, folder: Path) -> "ModelConfig":
        raw = json.loads((folder / "config.json").read_text())
        return cls(**{name: raw[name] for name in cls.__dataclass_fields__ if name in raw})


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        dim, heads, kv_heads, head_dim = (
            config.hidden_size,
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
        )
        self.heads, self.kv_heads, self.scale = heads, kv_heads, head_dim**-0.5
        self.q_proj = nn.Linear(dim, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(dim, kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(dim, kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(heads * head_dim, dim, bias=False)
        self.rope = nn.RoPE(head_dim, traditional=config.rope_traditional, base=config.rope_theta)

    def __call__(self, x: mx.array, mask, cache) -> mx.array:
        batch, length, _ = x.shape
        q = self.q_proj(x).reshape(batch, length, self.heads, -1).transpose(0, 2, 1, 3)
        k = self.k_proj(x).reshape(batch, length, self.kv_heads, -1).transpose(0, 2, 1, 3)
        v = self.v_proj(x).reshape(batch, length, self.kv_heads, -1).transpose(0, 2, 1, 3)
        q = self.rope(q, offset=cache.offset)
        k = self.rope(k, offset=cache.offset)
        k, v = cache.update_and_fetch(k, v)
        out = scaled_dot_product_attention(q, k, v, cache, scale=self.scale, mask=mask)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(batch, length, -1))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.self_attn = Attention(config)
        self.mlp = MLP(config)
        self.input_layernorm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def __call__(self, x: mx.array, mask, cache) -> mx.array:
        return self.feed(x + self.self_attn(self.input_layernorm(x), mask, cache))

    def feed(self, h: mx.array) -> mx.array:
        return h + self.mlp(self.post_attention_layernorm(h))


class Body(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = [Block(config) for _ in range(config.num_hidden_layers)]
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)


class Llama(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = Body(config)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def hidden(self, tokens: mx.array, caches: list) -> mx.array:
        h = self.model.embed_tokens(tokens)
        mask = "causal" if tokens.shape[1] > 1 else None
        for layer, cache in zip(self.model.layers, caches, strict=True):
            h = layer(h, mask, cache)
        return self.model.norm(h)

    def logits(self, hidden: mx.array) -> mx.array:
        if self.config.tie_word_embeddings:
            return self.model.embed_tokens.as_linear(hidden)
        return self.lm_head(hidden)

    def logits_for(self, hidden: mx.array, ids: mx.array) -> mx.array:
        """Logits of the given token ids only: their rows of the output projection."""
        head = self.model.embed_tokens if self.config.tie_word_embeddings else self.lm_head
        if isinstance(head, nn.QuantizedEmbedding | nn.QuantizedLinear):
            rows = (head.weight[ids], head.scales[ids], head.biases[ids])
            return mx.quantized_matmul(hidden, *rows, transpose=True, group_size=head.group_size, bits=head.bits)
        return hidden @ head.weight[ids].T

    def __call__(self, tokens: mx.array, caches: list) -> mx.array:
        return self.logits(self.hidden(tokens, caches))

    def make_caches(self, kv_bits: int = 0) -> list:
        if kv_bits:
            group_size = 64 if self.config.head_dim % 64 == 0 else 32
            return [QuantizedKVCache(group_size=group_size, bits=kv_bits) for _ in self.model.layers]
        return [KVCache() for _ in self.model.layers]


def load(folder: Path, weights: str = "quantized", scale_dtype: str = "float16") -> Llama:
    config = ModelConfig.read(folder)
    raw = json.loads((folder / "config.json").read_text())
    tensors = mx.load(str(folder / "model.safetensors"))
    model = Llama(config)
    quantization = raw.get("quantization")
    if quantization:
        quantize(model, quantization, tensors)
    model.load_weights(list(tensors.items()))
    if scale_dtype == "float32" or weights == "fp32":
        widen_scales(model)
    if weights == "fp32":
        model = dequantize(model)
    mx.eval(model.parameters())
    return model


def compile_blocks(model: Llama) -> None:
    for layer in model.model.layers:
        layer.feed = mx.compile(layer.feed)


def quantize(model: Llama, quantization: dict, tensors: dict) -> None:
    def spec(path: str, module) -> dict | bool:
        if not hasattr(module, "to_quantized") or f"{path}.scales" not in tensors:
            return False
        own = quantization.get(path, quantization)
        return {"group_size": own["group_size"], "bits": own["bits"]}

    nn.quantize(model, class_predicate=spec)


def widen_scales(model: Llama) -> None:
    for _, module in model.named_modules():
        if isinstance(module, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            module.scales = module.scales.astype(mx.float32)
            module.biases = module.biases.astype(mx.float32)


def dequantize(model: Llama) -> Llama:
    dense = []
    for path, module in model.named_modules():
        if isinstance(module, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            weight = mx.dequantize(module.weight, module.scales, module.biases, module.group_size, module.bits)
            dense.append((path, dense_module(module, weight)))
    model.update_modules(tree_unflatten(dense))
    return model


def dense_module(module, weight: mx.array) -> nn.Module:
    rows, cols = weight.shape
    if isinstance(module, nn.QuantizedEmbedding):
        dense = nn.Embedding(rows, cols)
    else:
        dense = nn.Linear(cols, rows, bias=False)
    dense.weight = weight
    return dense
