"""The physics floor of one image: the FLOPs and bytes of the ideal algorithm (body and head prefix caches, the
sequence trimmed to the image span, SigLIP once per step) at the stack's lossy settings (CFG stride, SigLIP reuse,
weight bits), against this machine's measured fp32 matmul throughput and memory bandwidth.

Each phase (the prefix once, then per step the body side and the head side, then the VAE) costs
max(FLOPs / throughput, bytes / bandwidth). FLOPs count matmuls, attention scores and convolutions (2 per
multiply-add); bytes count the weights each call reads (biases left out) and the cached prefix keys and values;
activations and elementwise work are left out, so the floor is a lower bound.

python floor.py --model MODEL_DIR [--stack WORKSPACE] [--steps 20]   the counts and the floor for the stack's knobs
python floor.py --measure [--framework mlx|torch]                      this process's GFLOP/s and GB/s, as JSON
"""

import argparse
import ctypes.util
import json
import os
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from reference.config import Config  # noqa: E402

FP32 = 4
GROUP = 64
MATMUL_N = 1024
COPY_FLOATS = 1 << 25


@dataclass
class Work:
    flops: float = 0.0
    bytes: float = 0.0

    def __add__(self, other: "Work") -> "Work":
        return Work(self.flops + other.flops, self.bytes + other.bytes)

    def seconds(self, gflops: float, gbs: float) -> float:
        return max(self.flops / (gflops * 1e9), self.bytes / (gbs * 1e9))


def total(works) -> Work:
    return sum(works, Work())


def weight_bytes(count: int, bits: str) -> float:
    """fp32, or affine-quantized with an fp32 scale and bias per group of 64 weights."""
    return count * FP32 if bits == "none" else count * int(bits) / 8 + count / GROUP * 2 * FP32


def linear(rows: int, fan_in: int, fan_out: int, bits: str = "none") -> Work:
    return Work(2 * rows * fan_in * fan_out, weight_bytes(fan_in * fan_out, bits))


def attention(branches: int, heads: int, head_dim: int, queries: int, keys: int) -> Work:
    """Scores and the weighted sum of values, dense over every (query, key) pair."""
    return Work(branches * 4 * heads * head_dim * queries * keys)


def cached(branches: int, kv_heads: int, head_dim: int, length: int) -> Work:
    """Reading a cached prefix's keys and values."""
    return Work(0, branches * 2 * kv_heads * head_dim * length * FP32)


@dataclass(frozen=True)
class Plan:
    steps: int = 20
    cfg_stride: int = 1
    siglip: str = "per_step"  # every_branch | per_step | first
    body_cache: bool = True
    head_cache: bool = True
    trim: bool = True
    body_bits: str = "none"
    head_bits: str = "none"

    @classmethod
    def ideal(cls, settings: dict, steps: int = 20) -> "Plan":
        """The exact optimizations all on, the lossy ones as the stack sets them."""
        siglip = "first" if settings.get("siglip") == "first" else "per_step"
        bits = {k: str(settings.get(k, "none")) for k in ("body_bits", "head_bits")}
        return cls(steps, int(settings.get("cfg_stride", 1)), siglip, **bits)

    def branches(self, step: int) -> int:
        return 2 if step % self.cfg_stride == 0 else 1


def body(c: Config, n: int, queries: int, past: int, bits: str) -> Work:
    """The body over `queries` new positions per branch that also see `past` cached ones."""
    d, hd, rows = c.hidden_size, c.head_dim, n * queries
    layer = total([
        linear(rows, d, c.num_heads * hd, bits), linear(rows, d, c.num_kv_heads * hd, bits),
        linear(rows, d, c.num_kv_heads * hd, bits), linear(rows, c.num_heads * hd, d, bits),
        linear(rows, d, c.intermediate_size, bits), linear(rows, d, c.intermediate_size, bits),
        linear(rows, c.intermediate_size, d, bits), attention(n, c.num_heads, hd, queries, past + queries),
        cached(n, c.num_kv_heads, hd, past),
    ])  # fmt: skip
    return Work(layer.flops * c.num_layers, layer.bytes * c.num_layers)


def head_blocks(c: Config, n: int, queries: int, past: int, bits: str, modulated: bool = True) -> Work:
    e, heads = c.head_hidden, c.head_heads
    block = total([
        linear(n, e, 6 * e, bits) if modulated else Work(), linear(n * queries, e, e, bits),
        linear(n * queries, e, e, bits), linear(n * queries, e, e, bits), linear(n * queries, e, e, bits),
        linear(n * queries, e, c.head_mlp, bits), linear(n * queries, e, c.head_mlp, bits),
        linear(n * queries, c.head_mlp, e, bits), attention(n, heads, e // heads, queries, past + queries),
        cached(n, heads, e // heads, past),
    ])  # fmt: skip
    return Work(block.flops * c.head_layers, block.bytes * c.head_layers)


def head(c: Config, n: int, queries: int, past: int, bits: str) -> Work:
    e = c.head_hidden
    return total([
        linear(n * queries, c.hidden_size, e, bits), linear(n, c.time_dim, e, bits), linear(n, e, e, bits),
        head_blocks(c, n, queries, past, bits), linear(n, e, 2 * e, bits),
        linear(n * c.image_tokens, e, c.patch_dim, bits),
    ])  # fmt: skip


def siglip(c: Config, n: int) -> Work:
    s, t = c.siglip_hidden, c.image_tokens
    layer = total([
        linear(n * t, s, 3 * s), linear(n * t, s, s), linear(n * t, s, c.siglip_mlp), linear(n * t, c.siglip_mlp, s),
        attention(n, c.siglip_heads, s // c.siglip_heads, t, t),
    ])  # fmt: skip
    return linear(n * t, c.patch_dim, s) + Work(layer.flops * c.siglip_layers, layer.bytes * c.siglip_layers)


def vae(c: Config) -> Work:
    """conv_in at the latent size, a conv after each 2x upsample, conv_out at the image size; 3x3 kernels."""
    channels = [c.latent_channels, *c.vae_channels, 3]
    sizes = [c.latent_size * 2**i for i in range(len(c.vae_channels))] + [c.image_size]
    work = Work()
    for cin, cout, size in zip(channels[:-1], channels[1:], sizes, strict=True):
        work += Work(2 * cin * cout * 9 * size * size, cout * cin * 9 * FP32)
    return work


@dataclass
class Phases:
    """The work of one image by phase: the prefix once, per step the body side and the head side, the VAE."""

    prefix: Work = field(default_factory=Work)
    body: list[Work] = field(default_factory=list)
    head: list[Work] = field(default_factory=list)
    vae: Work = field(default_factory=Work)

    @property
    def all(self) -> Work:
        return total([self.prefix, *self.body, *self.head, self.vae])


def count(c: Config, plan: Plan) -> Phases:
    p, t = c.prefix_len, c.image_tokens
    span = t + (0 if plan.trim else c.tail_len)
    phases = Phases(vae=vae(c))
    if plan.body_cache:
        phases.prefix = body(c, 2, p, 0, plan.body_bits)
        if plan.head_cache:
            text = linear(2 * p, c.hidden_size, c.head_hidden, plan.head_bits)
            phases.prefix += text + head_blocks(c, 2, p, 0, plan.head_bits, modulated=False)
    for i in range(plan.steps):
        n = plan.branches(i)
        encoders = {"every_branch": n, "per_step": 1, "first": int(i == 0)}[plan.siglip]
        side = (siglip(c, encoders) if encoders else Work()) + linear(t, c.patch_dim, c.hidden_size)
        side += linear(max(encoders, 1) * t, c.siglip_hidden, c.hidden_size)
        past = p if plan.body_cache else 0
        phases.body.append(side + body(c, n, span + p - past, past, plan.body_bits))
        past = p if plan.body_cache and plan.head_cache else 0
        phases.head.append(head(c, n, span + p - past, past, plan.head_bits))
    return phases


@dataclass
class Floor:
    seconds: float
    body_s: float
    head_s: float
    vae_s: float
    flops: float
    bytes: float


def floor(phases: Phases, gflops: float, gbs: float) -> Floor:
    body_s = phases.prefix.seconds(gflops, gbs) + sum(w.seconds(gflops, gbs) for w in phases.body)
    head_s = sum(w.seconds(gflops, gbs) for w in phases.head)
    vae_s = phases.vae.seconds(gflops, gbs)
    work = phases.all
    return Floor(body_s + head_s + vae_s, body_s, head_s, vae_s, work.flops, work.bytes)


def settings(stack: Path) -> dict:
    """The knob values a stack runs with (the defaults in its atelier.knobs.toml)."""
    path = Path(stack) / "atelier.knobs.toml"
    if not path.is_file():
        return {}
    return {k: v["default"] for k, v in tomllib.loads(path.read_text()).items() if isinstance(v, dict)}


def measure(framework: str = "mlx", blas: str = "bundled") -> dict:
    """GFLOP/s of a 1024^3 fp32 matmul and GB/s of a 128 MB copy, in a fresh process with the BLAS asked for."""
    env = dict(os.environ)
    library = ctypes.util.find_library("openblas") if blas == "openblas" else None
    if library:
        env["LD_PRELOAD"] = " ".join(filter(None, [env.get("LD_PRELOAD"), library]))
    command = [sys.executable, str(Path(__file__).resolve()), "--measure", "--framework", framework]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {framework}: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1]) | {"blas": blas if library or blas == "bundled" else "-"}


def metrics(model: Path, stack: Path, steps: int, latency: float) -> dict[str, float]:
    """The METRIC values the benchmark prints beside a latency: the floor, the ratio to it and the machine."""
    knobs = settings(stack)
    machine = measure("mlx", str(knobs.get("blas", "bundled")))
    phases = count(Config.load(model), Plan.ideal(knobs, steps))
    result = floor(phases, machine["matmul_gflops"], machine["bandwidth_gbs"])
    return {"floor_s": result.seconds, "floor_ratio": latency / result.seconds, "floor_gflop": result.flops / 1e9,
            "matmul_gflops": machine["matmul_gflops"], "bandwidth_gbs": machine["bandwidth_gbs"]}  # fmt: skip


def best_time(run, repeats: int = 3) -> float:
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def measure_here(framework: str) -> dict:
    """The framework's matmul; the copy (into a buffer allocated once) in numpy, whichever the framework."""
    import numpy as np

    x, y = np.ones(COPY_FLOATS, np.float32), np.zeros(COPY_FLOATS, np.float32)
    copy = best_time(lambda: np.copyto(y, x))
    if framework == "torch":
        import torch

        a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
        matmul = best_time(lambda: a @ b)
    else:
        import mlx.core as mx

        a, b = mx.random.normal((MATMUL_N, MATMUL_N)), mx.random.normal((MATMUL_N, MATMUL_N))
        mx.eval(a, b)
        matmul = best_time(lambda: mx.eval(a @ b))
    return {"matmul_gflops": 2 * MATMUL_N**3 / matmul / 1e9, "bandwidth_gbs": 2 * COPY_FLOATS * FP32 / copy / 1e9}


def main() -> int:
    parser = argparse.ArgumentParser(description="showo2-tiny physics floor")
    parser.add_argument("--measure", action="store_true")
    parser.add_argument("--framework", choices=("mlx", "torch"), default="mlx")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--stack", type=Path)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure_here(args.framework)))
        return 0
    if args.model is None:
        parser.error("--model is required unless --measure")
    knobs = settings(args.stack) if args.stack else {}
    phases = count(Config.load(args.model), Plan.ideal(knobs, args.steps))
    machine = measure("mlx", knobs.get("blas", "bundled"))
    result = floor(phases, machine["matmul_gflops"], machine["bandwidth_gbs"])
    print(json.dumps(machine | vars(result), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
