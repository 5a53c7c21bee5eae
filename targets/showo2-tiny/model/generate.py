"""Write the synthetic Show-o2-style tiny model: config.json and fixed-seed weights in model.safetensors.

python generate.py OUT_DIR
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

HERE = Path(__file__).resolve().parent


def shapes(c: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every tensor's shape and initializer, named as the reference's torch modules name them."""
    d, f, hd = c["hidden_size"], c["intermediate_size"], c["hidden_size"] // c["num_heads"]
    s, e, m, sm = c["siglip_hidden"], c["head_hidden"], c["head_mlp"], c["siglip_mlp"]
    p = c["latent_channels"] * c["patch_size"] ** 2
    n = (c["latent_size"] // c["patch_size"]) ** 2
    out = {"body.embed.weight": ((c["vocab_size"], d), "embed"), "body.norm.weight": ((d,), "one")}
    for i in range(c["num_layers"]):
        out |= attention(f"body.layers.{i}.attn", d, c["num_heads"] * hd, c["num_kv_heads"] * hd)
        out |= swiglu(f"body.layers.{i}.mlp", d, f)
        out |= {f"body.layers.{i}.input_norm.weight": ((d,), "one"), f"body.layers.{i}.post_norm.weight": ((d,), "one")}
    out |= linear("patch", p, d) | linear("fuse", s, d)
    out |= linear("siglip.patch", p, s) | {"siglip.pos": ((n, s), "pos")}
    for i in range(c["siglip_layers"]):
        b = f"siglip.layers.{i}"
        out |= linear(f"{b}.attn.qkv", s, 3 * s) | linear(f"{b}.attn.o", s, s)
        out |= linear(f"{b}.mlp.fc1", s, sm) | linear(f"{b}.mlp.fc2", sm, s)
        out |= layer_norm(f"{b}.norm1", s) | layer_norm(f"{b}.norm2", s)
    out |= layer_norm("siglip.norm", s)
    out |= linear("head.proj", d, e) | linear("head.time.fc1", c["time_dim"], e) | linear("head.time.fc2", e, e)
    for i in range(c["head_layers"]):
        b = f"head.blocks.{i}"
        out |= attention(f"{b}.attn", e, e, e, o_bias=True) | swiglu(f"{b}.mlp", e, m)
        out |= linear(f"{b}.ada", e, 6 * e, "ada")
        out |= {f"{b}.norm1.weight": ((e,), "one"), f"{b}.norm2.weight": ((e,), "one")}
    out |= {"head.norm.weight": ((e,), "one")} | linear("head.ada", e, 2 * e, "ada") | linear("head.out", e, p, "out")
    chans = [c["latent_channels"], *c["vae_channels"]]
    names = ["vae.conv_in", "vae.up1", "vae.up2"]
    for name, cin, cout in zip(names, chans[:-1], chans[1:], strict=True):
        out |= {f"{name}.weight": ((cout, cin, 3, 3), "conv"), f"{name}.bias": ((cout,), "bias")}
    out |= {"vae.conv_out.weight": ((3, chans[-1], 3, 3), "conv_out"), "vae.conv_out.bias": ((3,), "bias")}
    return out


def linear(name: str, fan_in: int, fan_out: int, init: str = "linear") -> dict:
    return {f"{name}.weight": ((fan_out, fan_in), init), f"{name}.bias": ((fan_out,), "bias")}


def attention(name: str, d: int, q: int, kv: int, o_bias: bool = False) -> dict:
    out = linear(f"{name}.q", d, q) | linear(f"{name}.k", d, kv) | linear(f"{name}.v", d, kv)
    return out | (linear(f"{name}.o", q, d) if o_bias else {f"{name}.o.weight": ((d, q), "linear")})


def swiglu(name: str, d: int, f: int) -> dict:
    return {
        f"{name}.gate.weight": ((f, d), "linear"),
        f"{name}.up.weight": ((f, d), "linear"),
        f"{name}.down.weight": ((d, f), "linear"),
    }


def layer_norm(name: str, d: int) -> dict:
    return {f"{name}.weight": ((d,), "one"), f"{name}.bias": ((d,), "zero")}


def init(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> np.ndarray:
    if kind == "one":
        return np.ones(shape, np.float32)
    if kind == "zero":
        return np.zeros(shape, np.float32)
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    std = {
        "embed": 1.0,
        "pos": 0.5,
        "bias": 0.02,
        "linear": 1.0 / np.sqrt(fan_in),
        "ada": 0.2 / np.sqrt(fan_in),
        "out": 0.6 / np.sqrt(fan_in),
        "conv": np.sqrt(2.0 / fan_in),
        "conv_out": 0.5 / np.sqrt(fan_in),
    }[kind]
    return (rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float32)


def generate(out: Path) -> None:
    config = json.loads((HERE / "config.json").read_text())
    rng = np.random.default_rng(config["seed"])
    tensors = {name: init(rng, shape, kind) for name, (shape, kind) in shapes(config).items()}
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"))
    shutil.copyfile(HERE / "config.json", out / "config.json")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: generate.py OUT_DIR")
    generate(Path(sys.argv[1]))
