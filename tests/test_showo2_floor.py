import importlib.util
import sys
from pathlib import Path

import pytest

TARGET = Path(__file__).resolve().parents[1] / "targets" / "showo2-tiny"
TINY = dict(
    vocab_size=260, hidden_size=8, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=16, rope_theta=1e4,
    rms_norm_eps=1e-6, text_len=3, tail_len=2, latent_channels=1, latent_size=4, patch_size=2, siglip_hidden=4,
    siglip_layers=1, siglip_heads=1, siglip_mlp=8, head_hidden=4, head_layers=1, head_heads=1, head_mlp=8,
    time_dim=4, vae_channels=(2, 2, 2), seed=0,
)  # fmt: skip


def load_target_module(name: str):
    """A module of the showo2-tiny bundle, with the bundle's own `reference` package (other bundles have one too)."""
    ours = [k for k in sys.modules if k == "reference" or k.startswith("reference.")]
    saved = {k: sys.modules.pop(k) for k in ours}
    try:
        spec = importlib.util.spec_from_file_location(f"showo2_{name}", TARGET / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        for k in [k for k in sys.modules if k == "reference" or k.startswith("reference.")]:
            del sys.modules[k]
        sys.modules.update(saved)


@pytest.fixture(scope="module")
def floor():
    return load_target_module("floor")


@pytest.fixture(scope="module")
def tiny(floor):
    return floor.Config(**TINY)


def test_linear_and_quantized_bytes_by_hand(floor):
    assert floor.linear(3, 8, 16) == floor.Work(2 * 3 * 8 * 16, 8 * 16 * 4)
    assert floor.weight_bytes(128, "4") == 128 / 2 + 2 * 2 * 4  # 4-bit weights, a scale and a bias per 64
    assert floor.weight_bytes(128, "8") == 128 + 2 * 2 * 4


def test_body_layer_by_hand(floor, tiny):
    # two branches of 4 new positions seeing 4 cached ones: 8 rows through q (8x8), k and v (8x4), o (8x8),
    # gate and up (8x16), down (16x8); scores and values over 8 keys in 2 heads of 4; the cache read once per branch
    matmuls = 2 * 8 * (64 + 32 + 32 + 64 + 128 + 128 + 128)
    scores = 2 * 4 * 2 * 4 * 4 * 8
    weights = 4 * (64 + 32 + 32 + 64 + 128 + 128 + 128)
    cache = 2 * 2 * 1 * 4 * 4 * 4
    assert matmuls + scores == 11264
    assert floor.body(tiny, 2, 4, 4, "none") == floor.Work(matmuls + scores, weights + cache)


def test_vae_by_hand(floor, tiny):
    # 1 -> 2 channels at 4x4, 2 -> 2 at 8x8, 2 -> 2 at 16x16, 2 -> 3 at 16x16; 3x3 kernels
    flops = 2 * 9 * (1 * 2 * 16 + 2 * 2 * 64 + 2 * 2 * 256 + 2 * 3 * 256)
    assert floor.vae(tiny) == floor.Work(flops, 4 * 9 * (2 + 4 + 4 + 6))
    assert flops == 51264


def test_cfg_stride_skips_one_branch_of_body_and_head(floor, tiny):
    every = floor.count(tiny, floor.Plan(steps=4, cfg_stride=1))
    strided = floor.count(tiny, floor.Plan(steps=4, cfg_stride=2))
    one_branch = floor.body(tiny, 1, 4, 4, "none").flops + floor.head(tiny, 1, 4, 4, "none").flops
    assert every.all.flops - strided.all.flops == 2 * one_branch
    assert [w.flops for w in strided.body[::2]] == [every.body[0].flops] * 2


def test_reference_algorithm_does_more_work_than_the_ideal(floor, tiny):
    reference = floor.Plan(steps=2, siglip="every_branch", body_cache=False, head_cache=False, trim=False)
    ideal = floor.count(tiny, floor.Plan(steps=2)).all
    full = floor.count(tiny, reference)
    assert full.all.flops > ideal.flops
    # without caches each step runs the whole 10-token sequence: the body over 10 positions, two branches
    assert full.body[0].flops > floor.body(tiny, 2, 10, 0, "none").flops
    assert full.prefix == floor.Work()


def test_ideal_plan_keeps_only_the_lossy_settings(floor):
    plan = floor.Plan.ideal({"cfg_stride": 3, "siglip": "every_branch", "body_cache": "off", "head_bits": "4"}, 12)
    assert plan == floor.Plan(steps=12, cfg_stride=3, siglip="per_step", head_bits="4")
    assert floor.Plan.ideal({"siglip": "first"}).siglip == "first"


def test_floor_is_the_sum_of_each_phase_bound(floor):
    phases = floor.Phases(
        prefix=floor.Work(2e9, 0), body=[floor.Work(1e9, 8e9)], head=[floor.Work(4e9, 1e9)], vae=floor.Work(0, 4e9)
    )
    result = floor.floor(phases, gflops=2, gbs=4)
    assert (result.body_s, result.head_s, result.vae_s, result.seconds) == (1 + 2, 2, 1, 6)
    assert (result.flops, result.bytes) == (7e9, 13e9)
