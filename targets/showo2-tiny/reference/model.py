"""The Show-o2-style tiny model in plain PyTorch: Qwen2-style body, SigLIP-like encoder, flow head, VAE decoder."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from reference.config import Config


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x, positions, theta: float):
    half = x.shape[-1] // 2
    freqs = theta ** (-torch.arange(half, dtype=torch.float32) / half)
    angles = positions[:, None].float() * freqs[None, :]
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def attend(q, k, v, mask):
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1) @ v


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_heads: int, head_dim: int, theta: float, o_bias: bool = False):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim, self.theta = heads, kv_heads, head_dim, theta
        self.q = nn.Linear(dim, heads * head_dim)
        self.k = nn.Linear(dim, kv_heads * head_dim)
        self.v = nn.Linear(dim, kv_heads * head_dim)
        self.o = nn.Linear(heads * head_dim, dim, bias=o_bias)

    def forward(self, x, mask, positions):
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = rope(q, positions, self.theta), rope(k, positions, self.theta)
        repeat = self.heads // self.kv_heads
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        return self.o(attend(q, k, v, mask).transpose(1, 2).reshape(b, t, -1))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Layer(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.input_norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.attn = Attention(c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.rope_theta)
        self.post_norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = SwiGLU(c.hidden_size, c.intermediate_size)

    def forward(self, x, mask, positions):
        x = x + self.attn(self.input_norm(x), mask, positions)
        return x + self.mlp(self.post_norm(x))


class Body(nn.Module):
    """The causal language model body (Qwen2-style), run over [text | BOI | image | EOI + pad]."""

    def __init__(self, c: Config):
        super().__init__()
        self.embed = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(Layer(c) for _ in range(c.num_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, x, mask, positions):
        for layer in self.layers:
            x = layer(x, mask, positions)
        return self.norm(x)


class SigLIPLayer(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.heads = c.siglip_heads
        self.norm1 = nn.LayerNorm(c.siglip_hidden, eps=1e-6)
        self.norm2 = nn.LayerNorm(c.siglip_hidden, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(c.siglip_hidden, 3 * c.siglip_hidden)
        self.attn.o = nn.Linear(c.siglip_hidden, c.siglip_hidden)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(c.siglip_hidden, c.siglip_mlp)
        self.mlp.fc2 = nn.Linear(c.siglip_mlp, c.siglip_hidden)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.attn.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        full = torch.ones(t, t, dtype=torch.bool)
        x = x + self.attn.o(attend(q, k, v, full).transpose(1, 2).reshape(b, t, d))
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x)), approximate="tanh"))


class SigLIP(nn.Module):
    """The semantic encoder: a small bidirectional ViT over the latent patches."""

    def __init__(self, c: Config):
        super().__init__()
        self.patch = nn.Linear(c.patch_dim, c.siglip_hidden)
        self.pos = nn.Parameter(torch.zeros(c.image_tokens, c.siglip_hidden))
        self.layers = nn.ModuleList(SigLIPLayer(c) for _ in range(c.siglip_layers))
        self.norm = nn.LayerNorm(c.siglip_hidden, eps=1e-6)

    def forward(self, patches):
        x = self.patch(patches) + self.pos
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


def timestep_embedding(t, dim: int):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    angles = (t * 1000.0)[:, None] * freqs[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class HeadBlock(nn.Module):
    """A head transformer block: image tokens are modulated by the timestep (AdaLN), text tokens are not."""

    def __init__(self, c: Config):
        super().__init__()
        e = c.head_hidden
        self.ada = nn.Linear(e, 6 * e)
        self.norm1 = RMSNorm(e, c.rms_norm_eps)
        self.attn = Attention(e, c.head_heads, c.head_heads, e // c.head_heads, c.rope_theta, o_bias=True)
        self.norm2 = RMSNorm(e, c.rms_norm_eps)
        self.mlp = SwiGLU(e, c.head_mlp)

    def forward(self, x, temb, image, mask, positions):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(F.silu(temb))[:, None, :].chunk(6, dim=-1)
        h = modulate(self.norm1(x), shift1, scale1, image)
        x = x + gated(self.attn(h, mask, positions), gate1, image)
        h = modulate(self.norm2(x), shift2, scale2, image)
        return x + gated(self.mlp(h), gate2, image)


def modulate(h, shift, scale, image):
    return torch.where(image[None, :, None], h * (1 + scale) + shift, h)


def gated(h, gate, image):
    return torch.where(image[None, :, None], h * gate, h)


class Head(nn.Module):
    """The flow-matching head: AdaLN transformer blocks over the body's hidden states, velocity on the image span."""

    def __init__(self, c: Config):
        super().__init__()
        e = c.head_hidden
        self.time_dim = c.time_dim
        self.proj = nn.Linear(c.hidden_size, e)
        self.time = nn.Module()
        self.time.fc1 = nn.Linear(c.time_dim, e)
        self.time.fc2 = nn.Linear(e, e)
        self.blocks = nn.ModuleList(HeadBlock(c) for _ in range(c.head_layers))
        self.norm = RMSNorm(e, c.rms_norm_eps)
        self.ada = nn.Linear(e, 2 * e)
        self.out = nn.Linear(e, c.patch_dim)

    def forward(self, hidden, t, image, mask, positions):
        temb = self.time.fc2(F.silu(self.time.fc1(timestep_embedding(t, self.time_dim))))
        x = self.proj(hidden)
        for block in self.blocks:
            x = block(x, temb, image, mask, positions)
        shift, scale = self.ada(F.silu(temb))[:, None, :].chunk(2, dim=-1)
        return self.out(self.norm(x[:, image]) * (1 + scale) + shift)


class VAEDecoder(nn.Module):
    """Latents (B, C, S, S) to RGB in [-1, 1] (B, 3, 4S, 4S): conv, two nearest 2x upsamples with convs, conv."""

    def __init__(self, c: Config):
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


class ShowO2(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.config = c
        self.body = Body(c)
        self.patch = nn.Linear(c.patch_dim, c.hidden_size)
        self.fuse = nn.Linear(c.siglip_hidden, c.hidden_size)
        self.siglip = SigLIP(c)
        self.head = Head(c)
        self.vae = VAEDecoder(c)


def patchify(z, p: int):
    b, c, h, w = z.shape
    z = z.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return z.reshape(b, (h // p) * (w // p), c * p * p)


def unpatchify(x, c: int, p: int):
    b, n, _ = x.shape
    g = int(math.isqrt(n))
    x = x.view(b, g, g, c, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, g * p, g * p)


def omni_mask(c: Config):
    """Causal attention, except that image tokens see every image token (Show-o2's omni-attention)."""
    n = c.seq_len
    mask = torch.ones(n, n, dtype=torch.bool).tril()
    image = image_positions(c)
    return mask | (image[:, None] & image[None, :])


def image_positions(c: Config):
    image = torch.zeros(c.seq_len, dtype=torch.bool)
    image[c.prefix_len : c.prefix_len + c.image_tokens] = True
    return image
