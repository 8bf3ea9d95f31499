#!/usr/bin/python3
"""bitloom reads a GGUF written the way llama.cpp's converter writes one.

    llamacpp_gguf_interop.py --bitloom PATH --workdir DIR

1. `bitloom make-model --preset tiny256` writes a bf16 master-weight HF
   checkpoint (hidden 256, ffn 512: every row is whole TQ blocks).
2. interop/bitnet_convert.py (a re-implementation of convert_hf_to_gguf.py's
   BitnetModel path on the vendored gguf-py) writes it as GGUF with
   --outtype f32, f16, tq1_0 and tq2_0.
3. For each file, the reference is llama.cpp's dequantization of what is
   stored: gguf-py's GGUFReader + quants.dequantize, cross-checked bit for bit
   against a transliteration of ggml's dequantize_row_tq{1,2}_0 C loops.
   `bitloom inspect --stats` prints, per tensor, count/sum/sumsq of its
   dequantized floats summed in float64 in row-major order; the reference sums
   the same way (sequential float64), so identical floats give identical bits.
   Required: count equal, |sum - ref| and |sumsq - ref| <= 1e-9 * max(|ref|, 1e-300)
   (the exact differences are printed; they are expected to be 0).
   Also: GGUF names map back to the HF names, shapes are [out, in] (the GGUF
   dims reversed), the packing is the stored type, `bitloom import` succeeds
   and types the projections !loom.ternary<OUTxIN, f32|f16|tq1_0|tq2_0>, and
   the converted file tokenizes like the HF directory.
4. Order: count/sum/sumsq cannot see where a value sits, so one forward pass
   (`bitloom step --lr 0`) on the GGUF must give the loss bitloom gives on an
   HF directory written from llama.cpp's dequantization (packed uint8 +
   weight_scale projections, F32 rest, HF [out, in] layout): same arithmetic,
   same floats, so the losses are equal (rel <= 1e-6) unless a value was read
   into another place. PyTorch's loss on that directory (bitnet_reference.py)
   is printed and held to 1e-3 (int8-tie flips between two float32 orders).
5. Negative controls: (a) one TQ2_0 block's d changed in a copy: the
   comparison against the intact file's reference flags exactly that tensor,
   with the sum/sumsq change the block predicts; (b) two rows of a TQ2_0
   tensor swapped: the stats stay identical, the forward loss moves.

Exit status 0 when everything holds, 1 otherwise. Needs numpy and torch.
"""

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np

sys.dont_write_bytecode = True  # keep the source tree clean under ctest
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "third_party", "gguf-py"))
sys.path.insert(0, os.path.join(HERE, "interop"))
sys.path.insert(0, HERE)

import gguf  # noqa: E402
from gguf import GGMLQuantizationType as QT  # noqa: E402
import bitnet_convert  # noqa: E402

REL_TOL = 1e-9
OUTTYPES = ["f32", "f16", "tq1_0", "tq2_0"]
PROJ_TYPE = {"f32": QT.F32, "f16": QT.F16, "tq1_0": QT.TQ1_0, "tq2_0": QT.TQ2_0}
EMBD_TYPE = {"f32": QT.F32, "f16": QT.F16, "tq1_0": QT.F16, "tq2_0": QT.F16}
TEXTS = [
    "Hello world, the people need any count.",
    "  leading spaces and\ttabs\n",
    "numbers 12345 and 3.14159; punctuation!?",
    "caf\u00e9 na\u00efve \u65e5\u672c\u8a9e \U0001F680",
    "<|begin_of_text|>special<|eot_id|> tokens",
    "",
]

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL:", what)
    return ok


def run(cmd, **kw):
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout


# ---------------------------------------------------------------------------
# llama.cpp's dequantization
# ---------------------------------------------------------------------------

def ggml_dequant_tq2_0(raw):
    """ggml-quants.c dequantize_row_tq2_0, loop for loop:
        for (j = 0; j < sizeof(x->qs); j += 32)
          for (l = 0; l < 4; ++l)
            for (m = 0; m < 32; ++m) { int8_t q = (x[i].qs[j + m] >> (l*2)) & 3;
                                       *y++ = (float) (q - 1) * d; }"""
    blocks = raw.reshape(-1, 66)
    d = blocks[:, 64:66].copy().view(np.float16).astype(np.float32)  # GGML_FP16_TO_FP32
    qs = blocks[:, :64]
    out = []
    for j in range(0, 64, 32):
        for l in range(4):
            q = ((qs[:, j:j + 32] >> (l * 2)) & 3).astype(np.int8)
            out.append((q - 1).astype(np.float32) * d)
    return np.concatenate(out, axis=1).reshape(-1)


def ggml_dequant_tq1_0(raw):
    """ggml-quants.c dequantize_row_tq1_0, loop for loop (pow3 = {1,3,9,27,81,243};
    uint8_t q = qs[j + m] * pow3[n]; int16_t xi = ((uint16_t) q * 3) >> 8;
    *y++ = (float) (xi - 1) * d): qs[0:32] x 5 trits, qs[32:48] x 5, qh[0:4] x 4."""
    blocks = raw.reshape(-1, 54)
    d = blocks[:, 52:54].copy().view(np.float16).astype(np.float32)
    qs, qh = blocks[:, :48], blocks[:, 48:52]
    pow3 = [1, 3, 9, 27, 81, 243]

    def trit(byte, n):
        q = (byte.astype(np.uint16) * pow3[n]) & 0xFF  # uint8_t product
        xi = ((q * 3) >> 8).astype(np.int16)
        return (xi - 1).astype(np.float32) * d

    out = []
    for j in range(0, 48 - 48 % 32, 32):
        for n in range(5):
            out.append(trit(qs[:, j:j + 32], n))
    for j in range(48 - 48 % 32, 48, 16):
        for n in range(5):
            out.append(trit(qs[:, j:j + 16], n))
    for n in range(4):
        out.append(trit(qh, n))
    return np.concatenate(out, axis=1).reshape(-1)


def reference_tensors(path):
    """{gguf name: (GGML type, logical shape [out, in], float32 values row-major)}
    from gguf-py's GGUFReader + quants.dequantize, cross-checked against the C
    loop transliterations above for TQ types."""
    reader = gguf.GGUFReader(path)
    out = {}
    for t in reader.tensors:
        qtype = QT(int(t.tensor_type))
        shape = tuple(int(d) for d in reversed([int(x) for x in t.shape]))
        values = gguf.quants.dequantize(np.asarray(t.data), qtype).astype(np.float32, copy=False)
        values = np.ascontiguousarray(values).reshape(-1)
        if qtype in (QT.TQ1_0, QT.TQ2_0):
            raw = np.ascontiguousarray(np.asarray(t.data)).view(np.uint8).reshape(-1)
            c = ggml_dequant_tq1_0(raw) if qtype == QT.TQ1_0 else ggml_dequant_tq2_0(raw)
            check(np.array_equal(c.view(np.uint32), values.view(np.uint32)),
                  f"{os.path.basename(path)}: {t.name}: gguf-py dequantize != ggml C loop order")
        check(values.size == math.prod(shape), f"{t.name}: {values.size} values for shape {shape}")
        out[t.name] = (qtype, shape, values)
    return reader, out


def stats(values):
    """count, sum, sumsq exactly as `bitloom inspect --stats` forms them:
    sum += double(v); sumSq += double(v) * double(v), in row-major order.
    np.cumsum is a sequential (not pairwise) float64 accumulation."""
    v = values.astype(np.float64)
    if v.size == 0:
        return 0, 0.0, 0.0
    return int(v.size), float(np.cumsum(v)[-1]), float(np.cumsum(v * v)[-1])


# ---------------------------------------------------------------------------
# bitloom
# ---------------------------------------------------------------------------

LINE = re.compile(r"^  (\S+)  (\S+)/(\S+)  \[([0-9, ]*)\](?:  \((\S+)\))?  count=(\d+) sum=(\S+) sumsq=(\S+)$")


def bitloom_inspect(bitloom, path):
    """{gguf name: dict(hf, dtype, packing, shape, count, sum, sumsq)}."""
    text = run([bitloom, "inspect", path, "--stats"])
    out = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        hf, dtype, packing, shape, gname, count, s, ss = m.groups()
        out[gname or hf] = dict(hf=hf, dtype=dtype, packing=packing,
                                shape=tuple(int(x) for x in shape.split(",") if x.strip()),
                                count=int(count), sum=float(s), sumsq=float(ss))
    return text, out


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


def compare(label, got, ref):
    """got: bitloom_inspect's table; ref: {gguf name: (count, sum, sumsq)}.
    Returns (bad tensor names, max |dsum|, max |dsumsq|, max rel)."""
    bad, mds, mdss, mrel = [], 0.0, 0.0, 0.0
    for name, (count, s, ss) in ref.items():
        g = got.get(name)
        if g is None:
            bad.append(name)
            print(f"  {label}: {name}: missing from bitloom inspect")
            continue
        ds, dss = abs(g["sum"] - s), abs(g["sumsq"] - ss)
        r = max(rel(g["sum"], s), rel(g["sumsq"], ss))
        mds, mdss, mrel = max(mds, ds), max(mdss, dss), max(mrel, r)
        if g["count"] != count or r > REL_TOL:
            bad.append(name)
            print(f"  {label}: {name}: bitloom count={g['count']} sum={g['sum']!r} sumsq={g['sumsq']!r}"
                  f" vs llama.cpp count={count} sum={s!r} sumsq={ss!r} (rel {r:.3g})")
    return bad, mds, mdss, mrel



# ---------------------------------------------------------------------------
# order-sensitive check: the forward loss
# ---------------------------------------------------------------------------
# count/sum/sumsq do not see where a value sits (a row swap keeps them). So an
# HF directory is written from llama.cpp's dequantization of the GGUF
# (projections as packed uint8 + weight_scale: ternary x one magnitude, exact;
# the rest F32, all in HF [out, in] layout), and one forward pass (`bitloom
# step --lr 0`, LoRA B = 0) on the GGUF must give the loss bitloom gives on that
# directory: the same arithmetic on the same floats, so any difference means a
# value read into a different place. bitloom's HF reader is itself checked
# against PyTorch elsewhere (bitnet_reference.py, parity tests); PyTorch's loss
# (test/python/bitnet_reference.py) on the directory is printed and held to a
# loose bound only: two float32 implementations that sum in different orders
# differ in the last bits, and the int8 activation quantizer turns a last-bit
# difference at a .5 tie into a whole step, so their losses differ by up to
# ~1e-4 here (see BITNET.md on float32 vs float64).

REFERENCE = os.path.join(HERE, "bitnet_reference.py")
SAME_LOSS_RTOL = 1e-6   # bitloom vs bitloom: same arithmetic (1e-6 > 1 float32 ulp)
TORCH_LOSS_RTOL = 1e-3  # bitloom vs PyTorch: int8-tie flips allowed, gross errors not


def write_packed_hf(ref, log, src_hf, out_dir):
    import safetensors_io
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    hf_of = {g: h for h, g, _, _ in log}
    tmap = None
    tensors = {}
    for gname, (qtype, shape, values) in ref.items():
        hfname = hf_of[gname]
        v = values.reshape(shape)
        if tmap is None:
            with open(os.path.join(src_hf, "config.json"), encoding="utf-8") as fh:
                tmap = bitnet_convert.build_tensor_map(json.load(fh)["num_hidden_layers"])
        if bitnet_convert.map_tensor_name(tmap, hfname)[0] in bitnet_convert.TERNARY_KEYS:
            mags = np.unique(np.abs(v[v != 0]))
            assert len(mags) == 1, gname
            m = mags[0]
            q = np.rint(v / m).astype(np.int8)
            assert np.array_equal(q.astype(np.float32) * m, v), gname
            codes = (q + 1).astype(np.uint8)
            rows = shape[0] // 4
            packed = np.zeros((rows, shape[1]), dtype=np.uint8)
            for i in range(4):
                packed |= codes[i * rows:(i + 1) * rows] << np.uint8(2 * i)
            tensors[hfname] = packed
            tensors[hfname[:-len("weight")] + "weight_scale"] = np.array([m], dtype=np.float32)
        else:
            tensors[hfname] = v.astype(np.float32)
    safetensors_io.save(os.path.join(out_dir, "model.safetensors"), tensors, metadata={"format": "pt"})
    with open(os.path.join(src_hf, "config.json"), encoding="utf-8") as fh:
        cfg = json.load(fh)
    cfg["quantization_config"] = {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                  "quantization_mode": "offline"}
    cfg["torch_dtype"] = "float32"
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as fh:
        json.dump(cfg, fh, indent=2)
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if os.path.isfile(os.path.join(src_hf, f)):
            shutil.copyfile(os.path.join(src_hf, f), os.path.join(out_dir, f))


def first_loss(path):
    import safetensors_io
    return float(safetensors_io.load(path, names={"loss"})["loss"].reshape(-1)[0])


def forward_losses(bl, gguf_path, ref, log, src_hf, work, tag, ids_txt, adapter):
    """-> (bitloom on the GGUF, bitloom on llama.cpp's dequantization as HF,
    PyTorch on that HF directory): the loss before the first step."""
    ref_dir = os.path.join(work, f"ref-packed-{tag}")
    write_packed_hf(ref, log, src_hf, ref_dir)
    common = ["--tokens", ids_txt, "--adapter", adapter, "--steps", "1", "--lr", "0", "--out"]
    outs = [os.path.join(work, f"{k}-{tag}.safetensors") for k in ("step-gguf", "step-hf", "torch-hf")]
    run([bl, "step", gguf_path] + common + [outs[0]])
    run([bl, "step", ref_dir] + common + [outs[1]])
    run([sys.executable, REFERENCE, ref_dir] + common + [outs[2]])
    return tuple(first_loss(o) for o in outs)


# ---------------------------------------------------------------------------
# the test
# ---------------------------------------------------------------------------

def expected_type(outtype, gname, ndims):
    if ndims <= 1 or gname.endswith("_norm.weight"):
        return QT.F32
    if gname.startswith("token_embd."):
        return EMBD_TYPE[outtype]
    return PROJ_TYPE[outtype]


def check_metadata(reader, outtype, hparams):
    f = reader.fields

    def val(key):
        fld = f.get(key)
        if fld is None:
            return None
        if fld.types[0] == gguf.GGUFValueType.STRING:
            return bytes(fld.parts[-1]).decode("utf-8")
        if fld.types[0] == gguf.GGUFValueType.ARRAY:
            return len(fld.data)
        return fld.parts[-1].tolist()[0]

    def vtype(key):
        fld = f.get(key)
        return fld.types[0] if fld is not None else None

    VT = gguf.GGUFValueType
    want = {
        "general.architecture": ("bitnet", VT.STRING),
        "general.type": ("model", VT.STRING),
        "general.file_type": (bitnet_convert.FTYPES[outtype], VT.UINT32),
        "general.quantization_version": (2, VT.UINT32),
        "bitnet.block_count": (hparams["num_hidden_layers"], VT.UINT32),
        "bitnet.context_length": (hparams["max_position_embeddings"], VT.UINT32),
        "bitnet.embedding_length": (hparams["hidden_size"], VT.UINT32),
        "bitnet.feed_forward_length": (hparams["intermediate_size"], VT.UINT32),
        "bitnet.attention.head_count": (hparams["num_attention_heads"], VT.UINT32),
        "bitnet.attention.head_count_kv": (hparams["num_key_value_heads"], VT.UINT32),
        "bitnet.rope.freq_base": (float(np.float32(hparams["rope_theta"])), VT.FLOAT32),
        "bitnet.attention.layer_norm_rms_epsilon": (float(np.float32(hparams["rms_norm_eps"])), VT.FLOAT32),
        "bitnet.rope.scaling.type": ("linear", VT.STRING),
        "bitnet.rope.scaling.factor": (1.0, VT.FLOAT32),
        "tokenizer.ggml.model": ("gpt2", VT.STRING),
        "tokenizer.ggml.pre": ("llama-bpe", VT.STRING),
        "tokenizer.ggml.tokens": (hparams["vocab_size"], VT.ARRAY),
        "tokenizer.ggml.token_type": (hparams["vocab_size"], VT.ARRAY),
        "tokenizer.ggml.bos_token_id": (hparams["bos_token_id"], VT.UINT32),
        "tokenizer.ggml.eos_token_id": (hparams["eos_token_id"], VT.UINT32),
    }
    for key, (value, t) in want.items():
        check(val(key) == value and vtype(key) == t,
              f"{outtype}: {key} = {val(key)!r} ({vtype(key)!r}), want {value!r} ({t!r})")
    check("tokenizer.ggml.merges" in f, f"{outtype}: tokenizer.ggml.merges missing")
    # activation: no key for arch bitnet (upstream BitnetModel writes none)
    check(not any(k.endswith("hidden_act") for k in f), f"{outtype}: unexpected hidden_act key")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bitloom", required=True)
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    bl = args.bitloom
    work = os.path.abspath(args.workdir)
    os.makedirs(work, exist_ok=True)
    hf = os.path.join(work, "hf-tiny256")
    if os.path.isdir(hf):
        shutil.rmtree(hf)
    run([bl, "make-model", "--preset", "tiny256", "--out", hf])
    with open(os.path.join(hf, "config.json"), encoding="utf-8") as fh:
        hparams = json.load(fh)

    # HF side: names and shapes (bitloom reads the HF dir too)
    _, hf_table = bitloom_inspect(bl, hf)  # keyed by HF name (no gguf name)

    # tokens and a LoRA adapter (B = 0: the loss is the base model's) for the forward check
    ids_txt = os.path.join(work, "ids.txt")
    with open(ids_txt, "w") as fh:
        fh.write(run([bl, "tokenize", hf, "--text", TEXTS[0] + " " + TEXTS[2]]))
    adapter = os.path.join(work, "adapter")
    if os.path.isdir(adapter):
        shutil.rmtree(adapter)
    run([sys.executable, REFERENCE, hf, "--write-adapter", adapter, "--lora-rank", "4",
         "--lora-alpha", "8", "--lora-targets", "all", "--seed", "7"])

    results, losses = {}, {}
    for outtype in OUTTYPES:
        print(f"== --outtype {outtype}")
        path = os.path.join(work, f"tiny256-{outtype}.gguf")
        log, gaps = bitnet_convert.convert(hf, outtype, path)
        if outtype == OUTTYPES[0]:
            for g in gaps:
                print("  converter adaptation:", g)
        reader, ref = reference_tensors(path)
        check_metadata(reader, outtype, hparams)

        # The converter's name mapping, and what it wrote.
        hf_of = {g: h for h, g, _, _ in log}
        check(set(hf_of) == set(ref), f"{outtype}: tensors written != tensors read back")
        for gname, (qtype, shape, values) in ref.items():
            check(qtype == expected_type(outtype, gname, len(shape)),
                  f"{outtype}: {gname} stored as {qtype.name}, want {expected_type(outtype, gname, len(shape)).name}")
            key = bitnet_convert.map_tensor_name(bitnet_convert.build_tensor_map(hparams["num_hidden_layers"]),
                                                 hf_of[gname])[0]
            if key in bitnet_convert.TERNARY_KEYS:
                # arch bitnet projections hold ternary x one magnitude ([ref C] weight_quant)
                mags = np.unique(np.abs(values[values != 0]))
                check(len(mags) == 1, f"{outtype}: {gname}: {len(mags)} distinct magnitudes, want 1")

        _, got = bitloom_inspect(bl, path)
        check(len(got) == len(ref), f"{outtype}: bitloom lists {len(got)} tensors, file has {len(ref)}")
        for gname, (qtype, shape, values) in ref.items():
            g = got.get(gname)
            if not check(g is not None, f"{outtype}: {gname} not listed by bitloom"):
                continue
            check(g["hf"] == hf_of[gname], f"{outtype}: {gname} -> {g['hf']}, converter read {hf_of[gname]}")
            check(g["hf"] in hf_table and hf_table[g["hf"]]["shape"] == g["shape"] == shape,
                  f"{outtype}: {gname}: bitloom shape {g['shape']}, GGUF dims reversed {shape}, "
                  f"HF {hf_table.get(g['hf'], {}).get('shape')}")
            want_pack = qtype.name.lower() if qtype in (QT.TQ1_0, QT.TQ2_0) else "plain"
            check(g["dtype"] == qtype.name and g["packing"] == want_pack,
                  f"{outtype}: {gname}: bitloom {g['dtype']}/{g['packing']}, stored {qtype.name}")
        ref_stats = {n: stats(v) for n, (_, _, v) in ref.items()}
        bad, mds, mdss, mrel = compare(outtype, got, ref_stats)
        check(not bad, f"{outtype}: stats disagree for {bad}")
        # and the exact (order-free) sums, as a second reference
        exact = max(max(rel(got[n]["sum"], math.fsum(v.astype(np.float64))),
                        rel(got[n]["sumsq"], math.fsum((v.astype(np.float64)) ** 2)))
                    for n, (_, _, v) in ref.items() if n in got)
        check(exact <= REL_TOL, f"{outtype}: vs exact fsum: max rel {exact:.3g}")
        print(f"  {len(ref)} tensors: max |dsum| = {mds!r}, max |dsumsq| = {mdss!r}, "
              f"max rel = {mrel!r} (vs exact fsum: {exact:.3g})")

        # bitloom import
        mlir = os.path.join(work, f"tiny256-{outtype}.mlir")
        run([bl, "import", path, "-o", mlir])
        with open(mlir, encoding="utf-8") as fh:
            ir = fh.read()
        elem = {"f32": "f32", "f16": "f16", "tq1_0": "tq1_0", "tq2_0": "tq2_0"}[outtype]
        for gname, (qtype, shape, _) in ref.items():
            if expected_type(outtype, gname, len(shape)) == PROJ_TYPE[outtype] and len(shape) == 2 \
                    and not gname.startswith("token_embd"):
                t = f"!loom.ternary<{shape[0]}x{shape[1]}, {elem}>"
                check(t in ir, f"{outtype}: import has no {t} (for {gname})")
        kinds = sorted(set(re.findall(r"!loom\.ternary<[^>]*>", ir)))
        print(f"  import ok: {', '.join(kinds)}")

        # order-sensitive: one forward pass
        lg, lh, lt = forward_losses(bl, path, ref, log, hf, work, outtype, ids_txt, adapter)
        check(rel(lg, lh) <= SAME_LOSS_RTOL,
              f"{outtype}: forward loss on the GGUF {lg!r} != on llama.cpp's weights as HF {lh!r}")
        check(rel(lg, lt) <= TORCH_LOSS_RTOL, f"{outtype}: forward loss {lg!r} vs PyTorch {lt!r}")
        print(f"  forward loss: GGUF {lg!r}, llama.cpp's weights as HF {lh!r} (rel {rel(lg, lh):.2g}); "
              f"PyTorch {lt!r} (rel {rel(lg, lt):.2g})")
        losses[outtype] = lg

        # tokenizer
        for s in TEXTS:
            a = run([bl, "tokenize", hf, "--text", s])
            b = run([bl, "tokenize", path, "--text", s])
            check(a == b, f"{outtype}: tokenize {s!r}: HF {a.strip()!r} vs GGUF {b.strip()!r}")
        print(f"  tokenize: {len(TEXTS)} strings give the same ids from HF and GGUF")
        results[outtype] = (path, ref, ref_stats, log)

    # -- negative control ------------------------------------------------------
    print("== negative control: one TQ2_0 block's d changed")
    path, ref, ref_stats, log = results["tq2_0"]
    bad_path = os.path.join(work, "tiny256-tq2_0-corrupt.gguf")
    shutil.copyfile(path, bad_path)
    reader = gguf.GGUFReader(bad_path)
    target = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
    row, blk = 3, 0  # row 3, block 0 (in = 256 -> one block per row)
    bpr = int(target.shape[0]) // 256  # blocks per row (shape[0] is ne0 = in)
    flat_block = row * bpr + blk
    off = int(target.data_offset) + flat_block * 66 + 64
    with open(bad_path, "r+b") as fh:
        fh.seek(off)
        d_old = np.frombuffer(fh.read(2), dtype=np.float16)[0]
        d_new = np.float16(float(d_old) * 1.5)
        fh.seek(off)
        fh.write(np.array([d_new], dtype=np.float16).tobytes())
    q = ref["blk.0.attn_q.weight"][2][flat_block * 256:(flat_block + 1) * 256] / np.float32(d_old)
    _, got_bad = bitloom_inspect(bl, bad_path)
    bad, _, _, _ = compare("corrupt vs intact reference", got_bad, ref_stats)
    check(bad == ["blk.0.attn_q.weight"], f"negative control: flagged {bad}, want ['blk.0.attn_q.weight']")
    # the change is the block's: delta sum = (d' - d) * sum(q), delta sumsq = (d'^2 - d^2) * nnz
    g, r = got_bad["blk.0.attn_q.weight"], ref_stats["blk.0.attn_q.weight"]
    pred_ds = (float(d_new) - float(d_old)) * float(q.sum())
    pred_dss = (float(d_new) ** 2 - float(d_old) ** 2) * float(np.count_nonzero(q))
    print(f"  block (row {row}, block {blk}) d {float(d_old)!r} -> {float(d_new)!r}: "
          f"dsum {g['sum'] - r[1]!r} (block predicts {pred_ds!r}), "
          f"dsumsq {g['sumsq'] - r[2]!r} (block predicts {pred_dss!r})")
    check(abs((g["sum"] - r[1]) - pred_ds) <= 1e-9 * max(1.0, abs(pred_ds)) and
          abs((g["sumsq"] - r[2]) - pred_dss) <= 1e-9 * max(1.0, abs(pred_dss)),
          "negative control: the change is not the corrupted block's")
    # and llama.cpp's reading of the corrupt file agrees with bitloom's
    _, ref_bad = reference_tensors(bad_path)
    bad2, mds, mdss, _ = compare("corrupt vs its own reference", got_bad,
                                 {n: stats(v) for n, (_, _, v) in ref_bad.items()})
    check(not bad2, f"negative control: bitloom and gguf-py disagree on the corrupt file: {bad2}")
    print(f"  flagged {bad}; bitloom and gguf-py still agree on the corrupt file "
          f"(max |dsum| {mds!r}, max |dsumsq| {mdss!r})")

    print("== order control: rows 0 and 5 of blk.0.attn_q.weight swapped in a TQ2_0 copy")
    swap_path = os.path.join(work, "tiny256-tq2_0-rowswap.gguf")
    shutil.copyfile(path, swap_path)
    rb = 66 * bpr  # bytes per row
    with open(swap_path, "r+b") as fh:
        fh.seek(int(target.data_offset))
        data = bytearray(fh.read(rb * 6))
        data[0:rb], data[5 * rb:6 * rb] = data[5 * rb:6 * rb], data[0:rb]
        fh.seek(int(target.data_offset))
        fh.write(bytes(data))
    _, got_swap = bitloom_inspect(bl, swap_path)
    bad3, _, _, _ = compare("row swap vs intact reference", got_swap, ref_stats)
    check(not bad3, f"order control: stats changed for {bad3}")
    _, ref_swap = reference_tensors(swap_path)
    sg, sh, st = forward_losses(bl, swap_path, ref_swap, log, hf, work, "tq2_0-rowswap", ids_txt, adapter)
    check(rel(sg, sh) <= SAME_LOSS_RTOL, f"order control: GGUF {sg!r} != its weights as HF {sh!r}")
    moved = rel(sg, losses["tq2_0"])
    check(moved > 10 * SAME_LOSS_RTOL, f"order control: loss {sg!r} did not move from {losses['tq2_0']!r}")
    print(f"  stats identical to the intact file ({'yes' if not bad3 else 'NO'}); forward loss "
          f"{losses['tq2_0']!r} -> {sg!r} (rel {moved:.2g}, {moved / SAME_LOSS_RTOL:.0f}x the tolerance); "
          f"the swapped file's weights as HF give {sh!r}, PyTorch {st!r}")

    if failures:
        print(f"\n{len(failures)} failure(s)")
        return 1
    print("\nOK: bitloom's dequantized weights match llama.cpp's for f32, f16, tq1_0, tq2_0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
