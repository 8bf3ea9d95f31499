#!/usr/bin/env python3
"""Writes a seeded random Hugging Face BitNet b1.58 checkpoint directory (numpy only).

  make_hf_checkpoint.py OUT_DIR [--vocab 97 --hidden 48 --ffn 80 --layers 2
      --heads 6 --kv-heads 3 [--head-dim 8] --rope-theta 10000 [--rope-parameters]
      --dtype bf16|f32 [--packed] [--untied] [--shards 1|2|...] --seed S]

What it writes:
  config.json        the fields transformers' BitNetConfig.to_dict() holds
                     (model_type "bitnet", hidden_act "relu2", ...) plus a
                     quantization_config {quant_method bitnet, linear_class
                     autobitlinear, quantization_mode online|offline}.
                     --head-dim writes an explicit "head_dim" key (HF's
                     attn_sub_norm is sized hidden_size, so heads * head_dim
                     must equal hidden_size); without it the key is absent.
                     --rope-parameters moves the RoPE base from a top-level
                     "rope_theta" to "rope_parameters": {rope_theta, rope_type}
                     (the layout newer transformers releases write).
  model.safetensors  or, with --shards N > 1, model-0000i-of-0000N.safetensors
                     plus model.safetensors.index.json ({metadata: {total_size},
                     weight_map}); the tensors are split in model order by size,
                     so a decoder layer can straddle two shards.

Tensors (HF names): model.embed_tokens.weight, model.norm.weight, per layer
input_layernorm / post_attention_layernorm / self_attn.attn_sub_norm /
mlp.ffn_sub_norm weights and the seven projections self_attn.{q,k,v,o}_proj,
mlp.{gate,up,down}_proj ([out, in]); lm_head.weight only with --untied
(tie_word_embeddings false). Float tensors are stored in --dtype (BF16 rounds
to nearest even). With --packed the projections are HF's offline format:
ternarized with HF's WeightQuant arithmetic (s = 1 / max(mean|W|, 1e-5),
t = clamp(round(W * s), -1, 1)), packed uint8 [out/4, in] (packed row r holds
rows r + i*(out/4) in bits 2i..2i+1 as t + 1), and `..._proj.weight_scale`
= [1 / s] in --dtype; out_features must then be a multiple of 4.

Also importable: write_checkpoint(out_dir, **options) returns the config dict.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io as st  # noqa: E402

PROJECTIONS = [
    ("q", "self_attn.q_proj"),
    ("k", "self_attn.k_proj"),
    ("v", "self_attn.v_proj"),
    ("o", "self_attn.o_proj"),
    ("gate", "mlp.gate_proj"),
    ("up", "mlp.up_proj"),
    ("down", "mlp.down_proj"),
]

DTYPES = {"bf16": ("BF16", "bfloat16"), "f32": ("F32", "float32")}


def make_config(vocab, hidden, ffn, layers, heads, kv_heads, head_dim=None, rope_theta=10000.0,
                rope_parameters=False, dtype="bf16", packed=False, untied=False, max_pos=256,
                rms_eps=1e-5):
    """config.json as BitNetConfig(...).to_dict() writes it (all of its attributes)."""
    conf = {
        "architectures": ["BitNetForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "relu2",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": ffn,
        "max_position_embeddings": max_pos,
        "model_type": "bitnet",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
        "pad_token_id": None,
        "quantization_config": {
            "linear_class": "autobitlinear",
            "quant_method": "bitnet",
            "quantization_mode": "offline" if packed else "online",
        },
        "rms_norm_eps": rms_eps,
        "tie_word_embeddings": not untied,
        "torch_dtype": DTYPES[dtype][1],
        "transformers_version": "4.52.0",
        "use_cache": True,
        "vocab_size": vocab,
    }
    if head_dim is not None:
        conf["head_dim"] = head_dim
    if rope_parameters:
        conf["rope_parameters"] = {"rope_theta": rope_theta, "rope_type": "default"}
    else:
        conf["rope_theta"] = rope_theta
    return dict(sorted(conf.items()))


def ternarize(w):
    """HF WeightQuant in float32: returns (ternary int8 [out, in], weight_scale = 1/s)."""
    w = np.asarray(w, dtype=np.float32)
    s = np.float32(1.0) / np.maximum(np.abs(w).mean(dtype=np.float32), np.float32(1e-5))
    t = np.clip(np.round(w * s), -1, 1).astype(np.int8)
    return t, np.float32(np.float32(1.0) / s)


def pack(ternary):
    """HF pack_weights: ternary [out, in] (out % 4 == 0) -> uint8 [out/4, in]."""
    t = np.asarray(ternary)
    if t.shape[0] % 4:
        raise SystemExit(f"--packed: out_features {t.shape[0]} is not a multiple of 4")
    rows = t.shape[0] // 4
    codes = (t.astype(np.int64) + 1).astype(np.uint8)
    out = np.zeros((rows,) + t.shape[1:], dtype=np.uint8)
    for i in range(4):
        out |= codes[i * rows:(i + 1) * rows] << (2 * i)
    return out


def write_checkpoint(out_dir, vocab=97, hidden=48, ffn=80, layers=2, heads=6, kv_heads=3, head_dim=None,
                     rope_theta=10000.0, rope_parameters=False, dtype="bf16", packed=False, untied=False,
                     shards=1, seed=0, max_pos=256, rms_eps=1e-5):
    if dtype not in DTYPES:
        raise SystemExit(f"--dtype must be one of {', '.join(DTYPES)}")
    if heads % kv_heads:
        raise SystemExit(f"heads {heads} is not a multiple of kv heads {kv_heads}")
    hd = head_dim if head_dim is not None else hidden // heads
    if hd * heads != hidden:
        raise SystemExit(f"heads * head_dim = {heads * hd} must equal hidden {hidden} "
                         "(HF sizes attn_sub_norm by hidden_size)")
    if hd % 2:
        raise SystemExit(f"head_dim {hd} must be even (RoPE rotates halves)")
    if shards < 1:
        raise SystemExit("--shards must be >= 1")
    conf = make_config(vocab, hidden, ffn, layers, heads, kv_heads, head_dim, rope_theta, rope_parameters,
                       dtype, packed, untied, max_pos, rms_eps)
    stored, _ = DTYPES[dtype]
    rng = np.random.default_rng(seed)
    q_out, kv_out = heads * hd, kv_heads * hd
    dims = {"q": (hidden, q_out), "k": (hidden, kv_out), "v": (hidden, kv_out), "o": (q_out, hidden),
            "gate": (hidden, ffn), "up": (hidden, ffn), "down": (ffn, hidden)}

    tensors, dtypes, order = {}, {}, []

    def put(name, arr, st_dtype=None):
        tensors[name] = arr
        dtypes[name] = st_dtype or stored
        order.append(name)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    put("model.embed_tokens.weight", rng.normal(0.0, 0.2, (vocab, hidden)).astype(np.float32))
    for i in range(layers):
        p = f"model.layers.{i}."
        put(p + "input_layernorm.weight", norm(hidden))
        for short, module in PROJECTIONS:
            fan_in, fan_out = dims[short]
            w = rng.normal(0.0, 0.05, (fan_out, fan_in)).astype(np.float32)
            if packed:
                t, scale = ternarize(w)
                put(p + module + ".weight", pack(t), "U8")
                put(p + module + ".weight_scale", np.array([scale], dtype=np.float32))
            else:
                put(p + module + ".weight", w)
            if short == "o":
                put(p + "self_attn.attn_sub_norm.weight", norm(hidden))
                put(p + "post_attention_layernorm.weight", norm(hidden))
        put(p + "mlp.ffn_sub_norm.weight", norm(ffn))
    put("model.norm.weight", norm(hidden))
    if untied:
        put("lm_head.weight", rng.normal(0.0, 0.2, (vocab, hidden)).astype(np.float32))

    os.makedirs(out_dir, exist_ok=True)
    for stale in os.listdir(out_dir):
        if stale.startswith("model") and (stale.endswith(".safetensors") or stale.endswith(".json")):
            os.remove(os.path.join(out_dir, stale))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(conf, f, indent=2)
        f.write("\n")
    meta = {"format": "pt"}
    if shards == 1:
        st.save(os.path.join(out_dir, "model.safetensors"), tensors, metadata=meta, dtypes=dtypes)
        return conf

    # Split in model order into `shards` groups of about equal size (HF's max_shard_size style).
    itemsize = {"BF16": 2, "F32": 4, "U8": 1}
    nbytes = {n: tensors[n].size * itemsize[dtypes[n]] for n in order}
    total = sum(nbytes.values())
    groups, acc = [[] for _ in range(shards)], 0
    for n in order:
        g = min(shards - 1, int(acc * shards // total))
        groups[g].append(n)
        acc += nbytes[n]
    groups = [g for g in groups if g]
    weight_map = {}
    for s, names in enumerate(groups):
        fname = f"model-{s + 1:05d}-of-{len(groups):05d}.safetensors"
        st.save(os.path.join(out_dir, fname), {n: tensors[n] for n in names}, metadata=meta,
                dtypes={n: dtypes[n] for n in names})
        weight_map.update({n: fname for n in names})
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        f.write("\n")
    return conf


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--vocab", type=int, default=97)
    ap.add_argument("--hidden", type=int, default=48)
    ap.add_argument("--ffn", type=int, default=80)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--kv-heads", type=int, default=3)
    ap.add_argument("--head-dim", type=int, default=None, help="write an explicit head_dim key")
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--rope-parameters", action="store_true",
                    help="put rope_theta under rope_parameters instead of the top level")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="float tensors' storage type")
    ap.add_argument("--packed", action="store_true", help="offline uint8 projections + weight_scale")
    ap.add_argument("--untied", action="store_true", help="tie_word_embeddings false, write lm_head.weight")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-position-embeddings", type=int, default=256)
    ap.add_argument("--rms-norm-eps", type=float, default=1e-5)
    a = ap.parse_args(argv)
    write_checkpoint(a.out_dir, vocab=a.vocab, hidden=a.hidden, ffn=a.ffn, layers=a.layers, heads=a.heads,
                     kv_heads=a.kv_heads, head_dim=a.head_dim, rope_theta=a.rope_theta,
                     rope_parameters=a.rope_parameters, dtype=a.dtype, packed=a.packed, untied=a.untied,
                     shards=a.shards, seed=a.seed, max_pos=a.max_position_embeddings,
                     rms_eps=a.rms_norm_eps)
    print(f"wrote {a.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
