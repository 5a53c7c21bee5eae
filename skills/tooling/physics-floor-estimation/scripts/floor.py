"""Physics floor for a dense decoder LLM from its HF config.json.

python floor.py config.json --weight-bits 8.5 --bandwidth 400 --tflops 13.6 --context 2048 --batch 1
"""

import argparse
import json


def params(c: dict) -> dict:
    d, layers, inter = c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"]
    heads = c["num_attention_heads"]
    kv = c.get("num_key_value_heads", heads)
    hd = c.get("head_dim") or d // heads
    vocab = c["vocab_size"]
    per_layer = d * heads * hd * 2 + d * kv * hd * 2 + 3 * d * inter + 2 * d
    embed = vocab * d
    head = 0 if c.get("tie_word_embeddings", False) else vocab * d
    return {
        "layers": per_layer * layers,
        "embed": embed,
        "lm_head": head,
        "total": per_layer * layers + embed + head + d,
        "read_per_token": per_layer * layers + (embed if head == 0 else head) + d,
        "kv_elems_per_token": 2 * layers * kv * hd,
        "attn_flops_per_ctx_token": 4 * layers * heads * hd,
    }


def floor(c: dict, a) -> dict:
    p = params(c)
    wbytes = p["read_per_token"] * a.weight_bits / 8
    kvbytes = p["kv_elems_per_token"] * a.kv_bits / 8 * a.context * a.batch
    step_bytes = wbytes + kvbytes
    step_flops = a.batch * (2 * p["read_per_token"] + p["attn_flops_per_ctx_token"] * a.context)
    t_bw = step_bytes / (a.bandwidth * 1e9)
    t_fl = step_flops / (a.tflops * 1e12)
    prefill_flops = 2 * p["read_per_token"] * a.context + p["attn_flops_per_ctx_token"] * a.context**2 / 2
    return {
        "params_total_B": p["total"] / 1e9,
        "weight_GB_read_per_step": wbytes / 1e9,
        "kv_KiB_per_token": p["kv_elems_per_token"] * a.kv_bits / 8 / 1024,
        "kv_GB_read_per_step": kvbytes / 1e9,
        "decode_step_ms_floor": max(t_bw, t_fl) * 1e3,
        "decode_bound": "bandwidth" if t_bw >= t_fl else "compute",
        "decode_tok_s_ceiling": a.batch / max(t_bw, t_fl),
        "prefill_ms_floor_for_context": prefill_flops / (a.tflops * 1e12) * 1e3,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--weight-bits", type=float, default=16, help="effective bits, e.g. 8.5 for MLX 8-bit g64")
    ap.add_argument("--kv-bits", type=float, default=16)
    ap.add_argument("--bandwidth", type=float, required=True, help="GB/s (measured if possible)")
    ap.add_argument("--tflops", type=float, required=True, help="dense TFLOPS at the compute dtype")
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=1)
    a = ap.parse_args()
    with open(a.config) as f:
        c = json.load(f)
    c = c.get("text_config", c)
    for k, v in floor(c, a).items():
        print(f"{k:32s} {v:.3f}" if isinstance(v, float) else f"{k:32s} {v}")


if __name__ == "__main__":
    main()
