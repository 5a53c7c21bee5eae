"""A plain Llama in torch over a batched KV cache: one slot per running request, slots kept compact."""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


@dataclass
class Config:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    vocab_size: int
    tie_word_embeddings: bool
    rope: dict
    dtype: str

    @classmethod
    def read(cls, folder: Path) -> "Config":
        raw = json.loads((folder / "config.json").read_text())
        if raw.get("model_type") != "llama":
            raise ValueError(f"{folder}: model_type {raw.get('model_type')!r} is not llama")
        rope = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
        rope.setdefault("rope_theta", raw.get("rope_theta", 10000.0))
        heads = raw["num_attention_heads"]
        return cls(
            hidden_size=raw["hidden_size"], intermediate_size=raw["intermediate_size"],
            num_hidden_layers=raw["num_hidden_layers"], num_attention_heads=heads,
            num_key_value_heads=raw.get("num_key_value_heads", heads),
            head_dim=raw.get("head_dim") or raw["hidden_size"] // heads, rms_norm_eps=raw["rms_norm_eps"],
            vocab_size=raw["vocab_size"], tie_word_embeddings=raw.get("tie_word_embeddings", False), rope=rope,
            dtype=NAMES[raw.get("torch_dtype") or raw.get("dtype", "float32")],
        )  # fmt: skip


def inverse_frequencies(config: Config) -> torch.Tensor:
    dim, rope = config.head_dim, config.rope
    inv = 1.0 / (rope["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind == "default":
        return inv
    if kind != "llama3":
        raise ValueError(f"rope type {kind!r} is not supported (default, llama3)")
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    old = rope["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > old / low, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old / high) & (wavelen <= old / low)
    return torch.where(medium, smoothed, scaled)


def load_weights(folder: Path, dtype: torch.dtype, device: str) -> dict[str, torch.Tensor]:
    index = folder / "model.safetensors.index.json"
    files = ["model.safetensors"]
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    weights = {}
    for name in files:
        with safe_open(folder / name, framework="pt", device=device) as f:
            for key in f.keys():
                weights[key.removeprefix("model.")] = f.get_tensor(key).to(dtype)
    return weights


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    turned = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + turned * sin


class Cache:
    """Keys and values of every slot: [slots, kv_heads, capacity, head_dim] per layer, grown by doubling."""

    def __init__(self, config: Config, slots: int, dtype: torch.dtype, device: str, capacity: int = 256):
        shape = (slots, config.num_key_value_heads, capacity, config.head_dim)
        layers = config.num_hidden_layers
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def reserve(self, length: int) -> None:
        if length <= self.capacity:
            return
        grown = max(length, 2 * self.capacity)
        for store in (self.keys, self.values):
            for i, old in enumerate(store):
                new = old.new_zeros(old.shape[0], old.shape[1], grown, old.shape[3])
                new[:, :, : old.shape[2]] = old
                store[i] = new

    def move(self, src: int, dest: int) -> None:
        for store in (self.keys, self.values):
            for layer in store:
                layer[dest] = layer[src]


class Llama:
    def __init__(self, folder: Path, dtype: str, attention: str, device: str):
        self.config = Config.read(folder)
        self.dtype = DTYPES[self.config.dtype if dtype == "auto" else dtype]
        self.device = device
        self.attention = attention
        self.w = load_weights(folder, self.dtype, device)
        self.head = self.w["embed_tokens.weight"] if self.config.tie_word_embeddings else self.w.pop("lm_head.weight")
        self.inv_freq = inverse_frequencies(self.config).to(device)

    def forward(self, tokens: torch.Tensor, first: int, starts: torch.Tensor, cache: Cache) -> torch.Tensor:
        """tokens [B, T] of slots first..first+B-1, each row's tokens at positions starts[b].. ; logits of the last."""
        c, w = self.config, self.w
        rows, length = tokens.shape
        positions = starts[:, None] + torch.arange(length, device=self.device)
        span = int(starts.max()) + length
        cache.reserve(span)
        freqs = positions[:, None, :, None].float() * self.inv_freq
        angles = torch.cat((freqs, freqs), dim=-1)
        cos, sin = angles.cos().to(self.dtype), angles.sin().to(self.dtype)
        visible = torch.arange(span, device=self.device) <= positions[:, None, :, None]
        slot = torch.arange(first, first + rows, device=self.device)[:, None]
        x = F.embedding(tokens, w["embed_tokens.weight"])
        for i in range(c.num_hidden_layers):
            p = f"layers.{i}."
            h = rms_norm(x, w[p + "input_layernorm.weight"], c.rms_norm_eps)
            q = F.linear(h, w[p + "self_attn.q_proj.weight"]).view(rows, length, -1, c.head_dim).transpose(1, 2)
            k = F.linear(h, w[p + "self_attn.k_proj.weight"]).view(rows, length, -1, c.head_dim).transpose(1, 2)
            v = F.linear(h, w[p + "self_attn.v_proj.weight"]).view(rows, length, -1, c.head_dim).transpose(1, 2)
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
            cache.keys[i][slot, :, positions] = k.transpose(1, 2)
            cache.values[i][slot, :, positions] = v.transpose(1, 2)
            keys = cache.keys[i][first : first + rows, :, :span]
            values = cache.values[i][first : first + rows, :, :span]
            o = self.attend(q, keys, values, visible).transpose(1, 2).reshape(rows, length, -1)
            x = x + F.linear(o, w[p + "self_attn.o_proj.weight"])
            h = rms_norm(x, w[p + "post_attention_layernorm.weight"], c.rms_norm_eps)
            gate = F.silu(F.linear(h, w[p + "mlp.gate_proj.weight"]))
            x = x + F.linear(gate * F.linear(h, w[p + "mlp.up_proj.weight"]), w[p + "mlp.down_proj.weight"])
        x = rms_norm(x[:, -1], w["norm.weight"], c.rms_norm_eps)
        return F.linear(x, self.head).float()

    def attend(self, q, keys, values, visible) -> torch.Tensor:
        if self.attention == "sdpa":
            return F.scaled_dot_product_attention(q, keys, values, attn_mask=visible, enable_gqa=True)
        groups = q.shape[1] // keys.shape[1]
        keys, values = keys.repeat_interleave(groups, dim=1), values.repeat_interleave(groups, dim=1)
        scores = (q @ keys.transpose(2, 3)) * q.shape[-1] ** -0.5
        scores = scores.masked_fill(~visible, float("-inf"))
        return torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype) @ values
