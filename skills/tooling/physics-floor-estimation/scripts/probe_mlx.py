"""Measured MLX machine numbers: streaming bandwidth (GB/s) and bf16/fp16 matmul TFLOPS.

python probe_mlx.py [--gb 2] [--n 8192] [--dtype float16]   (Apple Silicon GPU; takes ~10 s)
"""

import argparse
import time

import mlx.core as mx


def best_time(fn, repeats: int) -> float:
    mx.eval(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        mx.eval(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def bandwidth(gb: float, repeats: int) -> float:
    x = mx.ones((int(gb * 1e9 / 4),), dtype=mx.float32)
    mx.eval(x)
    t = best_time(lambda: mx.sum(x), repeats)
    return x.nbytes / t / 1e9


def matmul_tflops(n: int, dtype, repeats: int) -> float:
    a = mx.random.normal((n, n)).astype(dtype)
    b = mx.random.normal((n, n)).astype(dtype)
    mx.eval(a, b)
    t = best_time(lambda: a @ b, repeats)
    return 2 * n**3 / t / 1e12


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--repeats", type=int, default=10)
    a = ap.parse_args()
    print(f"device            {mx.default_device()}")
    print(f"bandwidth_GB_s    {bandwidth(a.gb, a.repeats):.1f}")
    print(f"matmul_TFLOPS     {matmul_tflops(a.n, getattr(mx, a.dtype), a.repeats):.2f}")


if __name__ == "__main__":
    main()
