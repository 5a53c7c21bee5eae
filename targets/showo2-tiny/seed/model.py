"""The Show-o2-style tiny model in MLX, with prefix caches: same weights and names as the PyTorch reference."""

import math

import mlx.core as mx
import mlx.nn as nn
from config import Config


def attend(q, k, v, mask):
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=1 / math.sqrt(q.shape[-1]), mask=mask)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_heads: int, head_dim: int, theta: float, o_bias: bool = False):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.q = nn.Linear(dim, heads * head_dim)
        self.k = nn.Linear(dim, kv_heads * head_dim)
        self.v = nn.Linear(dim, kv_heads * head_dim)
        self.o = nn.Linear(heads * head_dim, dim, bias=o_bias)
        self.rope = nn.RoPE(head_dim, base=theta)

    def __call__(self, x, mask, offset: int, cache=None):
        b, t, _ = x.shape
        q = self.q(x).reshape(b, t, self.heads, -1).transpose(0, 2, 1, 3)
        k = self.k(x).reshape(b, t, self.kv_heads, -1).transpose(0, 2, 1, 3)
        v = self.v(x).reshape(b, t, self.kv_heads, -1).transpose(0, 2, 1, 3)
        q, k = self.rope(q, offset=offset), self.rope(k, offset=offset)
        if cache is not None:
            k, v = mx.concatenate([cache[0], k], axis=2), mx.concatenate([cache[1], v], axis=2)
        out = attend(q, k, v, mask).transpose(0, 2, 1, 3).reshape(b, t, -1)
        return self.o(out), (k, v)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def __call__(self, x):
        return self.down(nn.silu(self.gate(x)) * self.up(x))


class Layer(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.input_norm = nn.RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.attn = Attention(c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.rope_theta)
        self.post_norm = nn.RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = SwiGLU(c.hidden_size, c.intermediate_size)

    def __call__(self, x, mask, offset: int, cache=None):
        h, kv = self.attn(self.input_norm(x), mask, offset, cache)
        x = x + h
        return x + self.mlp(self.post_norm(x)), kv


class Body(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.embed = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = [Layer(c) for _ in range(c.num_layers)]
        self.norm = nn.RMSNorm(c.hidden_size, c.rms_norm_eps)

    def __call__(self, x, mask, offset: int = 0, caches=None):
        kvs = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, mask, offset, caches[i] if caches else None)
            kvs.append(kv)
        return self.norm(x), kvs


def gelu_tanh(x):
    return 0.5 * x * (1 + mx.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


class SigLIPAttention(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.o = nn.Linear(dim, dim)


class SigLIPMLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)


class SigLIPLayer(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.heads = c.siglip_heads
        self.norm1 = nn.LayerNorm(c.siglip_hidden, eps=1e-6)
        self.norm2 = nn.LayerNorm(c.siglip_hidden, eps=1e-6)
        self.attn = SigLIPAttention(c.siglip_hidden)
        self.mlp = SigLIPMLP(c.siglip_hidden, c.siglip_mlp)

    def __call__(self, x):
        b, t, d = x.shape
        qkv = self.attn.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, -1).transpose(2, 0, 3, 1, 4)
        x = x + self.attn.o(attend(qkv[0], qkv[1], qkv[2], None).transpose(0, 2, 1, 3).reshape(b, t, d))
        return x + self.mlp.fc2(gelu_tanh(self.mlp.fc1(self.norm2(x))))


class SigLIP(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.patch = nn.Linear(c.patch_dim, c.siglip_hidden)
        self.pos = mx.zeros((c.image_tokens, c.siglip_hidden))
        self.layers = [SigLIPLayer(c) for _ in range(c.siglip_layers)]
        self.norm = nn.LayerNorm(c.siglip_hidden, eps=1e-6)

    def __call__(self, patches):
        x = self.patch(patches) + self.pos
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


def timestep_embedding(t, dim: int):
    half = dim // 2
    freqs = mx.exp(-math.log(10000.0) * mx.arange(half, dtype=mx.float32) / half)
    angles = (t * 1000.0)[:, None] * freqs[None, :]
    return mx.concatenate([mx.cos(angles), mx.sin(angles)], axis=-1)


class HeadBlock(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        e = c.head_hidden
        self.ada = nn.Linear(e, 6 * e)
        self.norm1 = nn.RMSNorm(e, c.rms_norm_eps)
        self.attn = Attention(e, c.head_heads, c.head_heads, e // c.head_heads, c.rope_theta, o_bias=True)
        self.norm2 = nn.RMSNorm(e, c.rms_norm_eps)
        self.mlp = SwiGLU(e, c.head_mlp)

    def __call__(self, x, temb, image, mask, offset: int, cache=None):
        shift1, scale1, gate1, shift2, scale2, gate2 = mx.split(self.ada(nn.silu(temb))[:, None, :], 6, axis=-1)
        h, kv = self.attn(modulate(self.norm1(x), shift1, scale1, image), mask, offset, cache)
        x = x + gated(h, gate1, image)
        return x + gated(self.mlp(modulate(self.norm2(x), shift2, scale2, image)), gate2, image), kv

    def text(self, x, mask):
        """The block on text positions only: no timestep modulation, so its keys and values can be cached."""
        h, kv = self.attn(self.norm1(x), mask, 0)
        x = x + h
        return x + self.mlp(self.norm2(x)), kv


def modulate(h, shift, scale, image):
    return h * (1 + scale) + shift if image is None else mx.where(image[None, :, None], h * (1 + scale) + shift, h)


def gated(h, gate, image):
    return h * gate if image is None else mx.where(image[None, :, None], h * gate, h)


class TimeMLP(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.fc1 = nn.Linear(c.time_dim, c.head_hidden)
        self.fc2 = nn.Linear(c.head_hidden, c.head_hidden)


class Head(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        e = c.head_hidden
        self.time_dim = c.time_dim
        self.proj = nn.Linear(c.hidden_size, e)
        self.time = TimeMLP(c)
        self.blocks = [HeadBlock(c) for _ in range(c.head_layers)]
        self.norm = nn.RMSNorm(e, c.rms_norm_eps)
        self.ada = nn.Linear(e, 2 * e)
        self.out = nn.Linear(e, c.patch_dim)

    def __call__(self, hidden, t, image, span: tuple[int, int], mask, offset: int = 0, caches=None):
        """Velocity patches for positions span of hidden; image marks the modulated positions (None: all)."""
        temb = self.time.fc2(nn.silu(self.time.fc1(timestep_embedding(t, self.time_dim))))
        x = self.proj(hidden)
        for i, block in enumerate(self.blocks):
            x, _ = block(x, temb, image, mask, offset, caches[i] if caches else None)
        shift, scale = mx.split(self.ada(nn.silu(temb))[:, None, :], 2, axis=-1)
        return self.out(self.norm(x[:, span[0] : span[1]]) * (1 + scale) + shift)

    def prefix(self, hidden, mask):
        """Keys and values of the text prefix in every block."""
        x, kvs = self.proj(hidden), []
        for block in self.blocks:
            x, kv = block.text(x, mask)
            kvs.append(kv)
        return kvs


class ShowO2(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.body = Body(c)
        self.patch = nn.Linear(c.patch_dim, c.hidden_size)
        self.fuse = nn.Linear(c.siglip_hidden, c.hidden_size)
        self.siglip = SigLIP(c)
        self.head = Head(c)


def patchify(z, p: int):
    b, c, h, w = z.shape
    z = z.reshape(b, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5)
    return z.reshape(b, (h // p) * (w // p), c * p * p)


def unpatchify(x, c: int, p: int):
    b, n, _ = x.shape
    g = math.isqrt(n)
    return x.reshape(b, g, g, c, p, p).transpose(0, 3, 1, 4, 2, 5).reshape(b, c, g * p, g * p)


def omni_mask(c: Config, length: int):
    """Causal attention, except that image tokens see every image token; over the first length positions."""
    i = mx.arange(length)
    image = (i >= c.prefix_len) & (i < c.prefix_len + c.image_tokens)
    return (i[:, None] >= i[None, :]) | (image[:, None] & image[None, :])
