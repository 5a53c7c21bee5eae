"""The toy llama in plain MLX (the layout mlx-lm saves), so that the stack starts without importing mlx-lm."""

import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn


class Cache:
    def __init__(self):
        self.keys, self.values, self.offset = None, None, 0

    def update(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        if self.keys is not None:
            keys, values = mx.concatenate([self.keys, keys], axis=2), mx.concatenate([self.values, values], axis=2)
        self.keys, self.values, self.offset = keys, values, keys.shape[2]
        return keys, values


class Attention(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        self.heads, self.kv_heads = c["num_attention_heads"], c["num_key_value_heads"]
        dim = c["hidden_size"] // self.heads
        self.scale = dim**-0.5
        self.q_proj = nn.Linear(c["hidden_size"], self.heads * dim, bias=False)
        self.k_proj = nn.Linear(c["hidden_size"], self.kv_heads * dim, bias=False)
        self.v_proj = nn.Linear(c["hidden_size"], self.kv_heads * dim, bias=False)
        self.o_proj = nn.Linear(self.heads * dim, c["hidden_size"], bias=False)
        self.rope = nn.RoPE(dim, traditional=False, base=c["rope_theta"])

    def __call__(self, x: mx.array, cache: Cache | None) -> mx.array:
        b, n, _ = x.shape
        q = self.q_proj(x).reshape(b, n, self.heads, -1).transpose(0, 2, 1, 3)
        k = self.k_proj(x).reshape(b, n, self.kv_heads, -1).transpose(0, 2, 1, 3)
        v = self.v_proj(x).reshape(b, n, self.kv_heads, -1).transpose(0, 2, 1, 3)
        offset = cache.offset if cache else 0
        q, k = self.rope(q, offset=offset), self.rope(k, offset=offset)
        if cache:
            k, v = cache.update(k, v)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask="causal" if n > 1 else None)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(b, n, -1))


class MLP(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        self.gate_proj = nn.Linear(c["hidden_size"], c["intermediate_size"], bias=False)
        self.up_proj = nn.Linear(c["hidden_size"], c["intermediate_size"], bias=False)
        self.down_proj = nn.Linear(c["intermediate_size"], c["hidden_size"], bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        self.self_attn, self.mlp = Attention(c), MLP(c)
        self.input_layernorm = nn.RMSNorm(c["hidden_size"], eps=c["rms_norm_eps"])
        self.post_attention_layernorm = nn.RMSNorm(c["hidden_size"], eps=c["rms_norm_eps"])

    def __call__(self, x: mx.array, cache: Cache | None) -> mx.array:
        h = x + self.self_attn(self.input_layernorm(x), cache)
        return h + self.mlp(self.post_attention_layernorm(h))


class Body(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = [Block(c) for _ in range(c["num_hidden_layers"])]
        self.norm = nn.RMSNorm(c["hidden_size"], eps=c["rms_norm_eps"])


class Model(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        self.model = Body(c)

    def __call__(self, tokens: mx.array, cache: list[Cache] | None = None) -> mx.array:
        h = self.model.embed_tokens(tokens)
        for layer, c in zip(self.model.layers, cache or [None] * len(self.model.layers), strict=True):
            h = layer(h, c)
        return self.model.embed_tokens.as_linear(self.model.norm(h))

    def make_cache(self) -> list[Cache]:
        return [Cache() for _ in self.model.layers]


def load(folder: Path) -> Model:
    model = Model(json.loads((folder / "config.json").read_text()))
    model.load_weights(str(folder / "model.safetensors"))
    mx.eval(model.parameters())
    return model
