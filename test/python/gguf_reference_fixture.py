#!/usr/bin/python3
"""Reference fixtures for bitloom's file-format layer, made by independent code.

    gguf_reference_fixture.py generate OUTDIR
        Writes, with llama.cpp's gguf-py (vendored in test/third_party/gguf-py)
        and numpy only:
          reference.gguf, reference_align64.gguf  GGUFWriter files with metadata
              of every value type and F32/F16/BF16/TQ1_0/TQ2_0/I8/I16/I32/I64/F64
              tensors (TQ and BF16 quantized by gguf-py's numpy quantizers);
          reference.safetensors  a safetensors file built with numpy + json in
              the reference writer's layout;
          *.src / *.deq.f32  each tensor's source bytes and gguf-py's (or
              numpy's) dequantized float32 values;
          stress.*  many ternary blocks of varied shapes, quantized and
              dequantized by gguf-py;
          conv.*  float16 / bfloat16 conversion tables from numpy and gguf-py;
          manifest.json  what all of the above hold.
        bitloom's formats_reference_test reads these and compares bit for bit,
        then writes ours.gguf, ours_align64.gguf and ours.safetensors.

    gguf_reference_fixture.py verify OUTDIR
        Reads the files bitloom wrote with gguf-py's GGUFReader (and a small
        numpy safetensors parser), checks them against the manifest and against
        the layout rules of llama.cpp's gguf.cpp.

Run with /usr/bin/python3 (needs numpy).
"""

import json
import os
import struct
import sys

import numpy as np

sys.dont_write_bytecode = True  # keep the source tree clean under ctest
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "third_party", "gguf-py"))

import gguf  # noqa: E402
from gguf import GGMLQuantizationType as QT  # noqa: E402
from gguf import GGUFValueType as VT  # noqa: E402

SEED = 1234


def write_raw(outdir, name, array):
    np.ascontiguousarray(array).tofile(os.path.join(outdir, name))
    return name


def f32(v):
    """The float32 value of v, as the exact Python float."""
    return float(np.float32(v))


# ---------------------------------------------------------------------------
# GGUF
# ---------------------------------------------------------------------------

def metadata_entries():
    """(key, gguf type, sub type, value) covering every GGUF value type."""
    return [
        ("general.name", VT.STRING, None, "bitloom reference"),
        ("test.u8", VT.UINT8, None, 200),
        ("test.i8", VT.INT8, None, -100),
        ("test.u16", VT.UINT16, None, 60000),
        ("test.i16", VT.INT16, None, -30000),
        ("test.u32", VT.UINT32, None, 4000000000),
        ("test.i32", VT.INT32, None, -2000000000),
        ("test.f32", VT.FLOAT32, None, f32(0.1)),
        ("test.bool_true", VT.BOOL, None, True),
        ("test.bool_false", VT.BOOL, None, False),
        ("test.str", VT.STRING, None, "h\u00e9llo \u2713 \U0001F600"),
        ("test.u64", VT.UINT64, None, 2**64 - 1),
        ("test.i64", VT.INT64, None, -(2**63)),
        ("test.f64", VT.FLOAT64, None, 1.0 / 3.0),
        ("bitnet.rope.freq_base", VT.FLOAT32, None, 500000.0),
        ("test.arr.u8", VT.ARRAY, VT.UINT8, [0, 1, 255]),
        ("test.arr.i8", VT.ARRAY, VT.INT8, [-128, 0, 127]),
        ("test.arr.u16", VT.ARRAY, VT.UINT16, [0, 65535]),
        ("test.arr.i16", VT.ARRAY, VT.INT16, [-32768, 32767]),
        ("test.arr.u32", VT.ARRAY, VT.UINT32, [0, 4294967295]),
        ("test.arr.i32", VT.ARRAY, None, [-2147483648, 7, 2147483647]),
        ("test.arr.f32", VT.ARRAY, None, [f32(1.5), f32(-0.25), f32(3.14159)]),
        ("test.arr.bool", VT.ARRAY, None, [True, False, True]),
        ("test.arr.str", VT.ARRAY, None, ["a", "", "\u00fcnicode", "tok en"]),
        ("test.arr.u64", VT.ARRAY, VT.UINT64, [0, 2**64 - 1]),
        ("test.arr.i64", VT.ARRAY, VT.INT64, [-(2**63), 2**63 - 1]),
        ("test.arr.f64", VT.ARRAY, VT.FLOAT64, [0.1, -1e300, 2.5]),
    ]


def ternary_source(rng, rows, cols):
    """Weights that exercise the ternary quantizers' corners, row by row."""
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    if rows > 1:  # a ternary pattern times a scale, as BitNet stores it
        x[1] = rng.integers(-1, 2, cols).astype(np.float32) * np.float32(0.0371)
    if rows > 2:  # a zero block (d = 0) and a block with exact rounding ties
        x[2, :256] = 0.0
        tie = np.tile(np.array([1.0, 0.5, -0.5, 0.25, -1.0, 0.0, -0.0, 0.4999999],
                               dtype=np.float32), cols // 8)
        x[2, 256:] = tie[: cols - 256] * np.float32(2.0)
    return x


def gguf_tensors(rng):
    """(name, numpy shape, ggml type, source array) in file order."""
    t = []
    t.append(("f32.weight", QT.F32, rng.standard_normal((3, 5)).astype(np.float32)))
    t.append(("f32.3d", QT.F32, rng.standard_normal((2, 3, 4)).astype(np.float32)))
    f16src = rng.standard_normal((4, 8)).astype(np.float32) * np.float32(100.0)
    f16src[0, :4] = [1e-7, 6.1e-5, 65519.0, 65520.0]  # subnormal, tie, overflow
    t.append(("f16.weight", QT.F16, f16src))
    bfsrc = rng.standard_normal((4, 16)).astype(np.float32)
    bfsrc[0, :2] = [1.00390625, 1.01171875]  # exact bf16 ties, both directions
    t.append(("bf16.weight", QT.BF16, bfsrc))
    t.append(("blk.0.attn_q.weight", QT.TQ1_0, ternary_source(rng, 4, 512)))
    t.append(("blk.0.ffn_down.weight", QT.TQ2_0, ternary_source(rng, 3, 768)))
    t.append(("i8.t", QT.I8, np.array([-128, -1, 0, 127], dtype=np.int8)))
    t.append(("i16.t", QT.I16, np.array([-32768, 5, 32767], dtype=np.int16)))
    t.append(("i32.t", QT.I32, np.array([-7, 1 << 24, 123456789], dtype=np.int32)))
    t.append(("i64.t", QT.I64, np.array([-(1 << 40), 3], dtype=np.int64)))
    t.append(("f64.t", QT.F64, np.array([0.1, -2.5e10, 1e-300], dtype=np.float64)))
    return t


def stored_and_dequantized(qtype, src):
    """What GGUFWriter stores for `src`, and gguf-py's float32 view of it."""
    if qtype == QT.F32:
        return src, src
    if qtype == QT.F16:
        stored = gguf.quants.quantize(src, QT.F16)
        return stored, gguf.quants.dequantize(stored, QT.F16)
    if qtype in (QT.BF16, QT.TQ1_0, QT.TQ2_0):
        stored = gguf.quants.quantize(src, qtype)
        return stored, gguf.quants.dequantize(stored, qtype)
    return src, src.astype(np.float32)


def write_gguf(outdir, filename, alignment, rng_seed):
    rng = np.random.default_rng(rng_seed)
    w = gguf.GGUFWriter(os.path.join(outdir, filename), arch="bitnet")
    kv = [{"key": "general.architecture", "type": int(VT.STRING),
           "sub_type": None, "value": "bitnet"}]
    if alignment != gguf.GGUF_DEFAULT_ALIGNMENT:
        w.add_custom_alignment(alignment)
        kv.append({"key": "general.alignment", "type": int(VT.UINT32),
                   "sub_type": None, "value": alignment})
    for key, vtype, sub, value in metadata_entries():
        w.add_key_value(key, value, vtype, sub_type=sub)
        if vtype == VT.ARRAY and sub is None:
            sub = gguf.GGUFValueType.get_type(value[0])
        kv.append({"key": key, "type": int(vtype),
                   "sub_type": None if sub is None else int(sub), "value": value})

    stem = os.path.splitext(filename)[0]
    tensors = []
    for name, qtype, src in gguf_tensors(rng):
        stored, deq = stored_and_dequantized(qtype, src)
        if qtype in (QT.BF16, QT.TQ1_0, QT.TQ2_0):
            w.add_tensor(name, stored, raw_dtype=qtype)
        else:
            w.add_tensor(name, stored)
        tensors.append({
            "name": name,
            "ggml_type": int(qtype),
            "dims": list(reversed(src.shape)),  # GGUF order, innermost first
            "source": write_raw(outdir, f"{stem}.{name}.src", src),
            "source_dtype": str(src.dtype),
            "dequantized": write_raw(outdir, f"{stem}.{name}.deq.f32",
                                     deq.astype(np.float32)),
        })
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"file": filename, "ours": "ours" + filename[len("reference"):],
            "alignment": alignment, "kv": kv, "tensors": tensors}


def write_stress(outdir):
    """Many ternary blocks, each drawn differently, through gguf-py."""
    rng = np.random.default_rng(SEED + 7)
    blocks = []
    for i in range(96):
        kind = i % 12
        if kind == 0:
            b = rng.standard_normal(256)
        elif kind == 1:
            b = rng.uniform(-1, 1, 256)
        elif kind == 2:
            b = rng.standard_cauchy(256)
        elif kind == 3:
            b = rng.integers(-1, 2, 256) * rng.uniform(1e-3, 10)
        elif kind == 4:
            b = np.zeros(256)
        elif kind == 5:
            b = np.zeros(256)
            b[rng.integers(0, 256)] = rng.standard_normal()
        elif kind == 6:  # exact ties at +-0.5 * amax (power-of-two scale)
            b = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], 256) * 2.0 ** rng.integers(-8, 8)
            b[0] = 2.0 ** 3
        elif kind == 7:  # just below and above the ties
            amax = 3.0
            b = rng.choice([0.4999, 0.5001, -0.4999, -0.5001], 256) * amax
            b[0] = amax
        elif kind == 8:  # d underflows to an fp16 subnormal
            b = rng.standard_normal(256) * 1e-6
        elif kind == 9:  # d rounds to a different fp16 value
            b = rng.standard_normal(256) * 1234.567
        elif kind == 10:
            b = rng.standard_normal(256) * 1e-30  # d flushes to fp16 zero
        else:
            b = -np.abs(rng.standard_normal(256))  # amax from a negative value
        blocks.append(b.astype(np.float32))
    src = np.stack(blocks).reshape(8, -1)  # 8 rows of 12 blocks
    files = {"source": write_raw(outdir, "stress.src.f32", src), "rows": 8,
             "cols": int(src.shape[1])}
    for qtype, tag in ((QT.TQ1_0, "tq1"), (QT.TQ2_0, "tq2")):
        q = gguf.quants.quantize(src, qtype)
        files[tag] = write_raw(outdir, f"stress.{tag}", q)
        files[tag + "_deq"] = write_raw(outdir, f"stress.{tag}.deq.f32",
                                        gguf.quants.dequantize(q, qtype))
    return files


def write_conversions(outdir):
    """float16 / bfloat16 conversion tables from numpy and gguf-py."""
    rng = np.random.default_rng(SEED + 3)
    halves = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    half_values = halves.view(np.float16).astype(np.float32)
    finite = half_values[np.isfinite(half_values)].astype(np.float64)
    finite = np.unique(finite)
    mids = ((finite[1:] + finite[:-1]) / 2).astype(np.float32)  # exact ties
    wide = (rng.choice([-1.0, 1.0], 20000) *
            2.0 ** rng.uniform(-30, 17, 20000)).astype(np.float32)
    bits = rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32)
    rand_bits = bits.view(np.float32)
    rand_bits = rand_bits[~np.isnan(rand_bits)]
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, 65519.996,
                        65520.0, -65520.0, 3.3895314e38, 3.4028235e38,
                        1.1754942e-38, 1e-45], dtype=np.float32)
    inputs = np.concatenate([half_values[np.isfinite(half_values)], mids, wide,
                             rand_bits, special]).astype(np.float32)
    not_nan = inputs[~np.isnan(inputs)]
    bf16 = gguf.quants.quantize(not_nan, QT.BF16).view(np.uint16)
    return {
        "half_values": write_raw(outdir, "conv.half_values.f32", half_values),
        "f16_inputs": write_raw(outdir, "conv.f16_inputs.f32", inputs),
        "f16_expected": write_raw(outdir, "conv.f16_expected.u16",
                                  inputs.astype(np.float16).view(np.uint16)),
        "bf16_inputs": write_raw(outdir, "conv.bf16_inputs.f32", not_nan),
        "bf16_expected": write_raw(outdir, "conv.bf16_expected.u16", bf16),
    }


# ---------------------------------------------------------------------------
# safetensors (the format is small enough to build with numpy + json)
# ---------------------------------------------------------------------------

SAFETENSORS_METADATA = {"format": "pt", "note": "\u00fcnicode \u2713"}


def safetensors_tensors(rng):
    bf = rng.standard_normal((2, 3)).astype(np.float32)
    bf_bits = gguf.quants.quantize(bf, QT.BF16).view(np.uint16)
    return [
        ("model.f32", "F32", rng.standard_normal((2, 3)).astype(np.float32)),
        ("model.f16", "F16", rng.standard_normal(5).astype(np.float16)),
        ("model.bf16", "BF16", bf_bits),
        ("model.f64", "F64", np.array([0.1, -3.0], dtype=np.float64)),
        ("model.i64", "I64", np.array([-(1 << 40), 9], dtype=np.int64)),
        ("model.i32", "I32", np.array([[1, -2], [3, -4]], dtype=np.int32)),
        ("model.i16", "I16", np.array([-32768, 32767], dtype=np.int16)),
        ("model.i8", "I8", np.array([-128, 127, 0], dtype=np.int8)),
        ("model.u8", "U8", np.array([0, 255, 7], dtype=np.uint8)),
        ("model.bool", "BOOL", np.array([True, False, True, True])),
        ("model.scalar", "F32", np.array(2.5, dtype=np.float32)),
        ("model.empty", "F32", np.zeros((0, 3), dtype=np.float32)),
    ]


def safetensors_float32(dtype, array):
    if dtype == "BF16":
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(np.float32)


def build_safetensors(entries, metadata):
    """Bytes of a safetensors file in the reference writer's layout."""
    header = {}
    if metadata:
        header["__metadata__"] = dict(sorted(metadata.items()))
    offset = 0
    for name, dtype, array in entries:
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    data = b"".join(np.ascontiguousarray(a).tobytes() for _, _, a in entries)
    return struct.pack("<Q", len(text)) + text + data


def parse_safetensors(path):
    """An independent reader: {name: (dtype, shape, bytes)}, metadata."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert (8 + n) % 8 == 0, "header not padded to 8 bytes"
    text = raw[8:8 + n]
    assert text.rstrip(b" ") == text.strip(), "header padding is not spaces"
    header = json.loads(text)
    data = raw[8 + n:]
    meta = header.pop("__metadata__", {})
    out = {}
    end = 0
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
        b, e_ = e["data_offsets"]
        assert b == end, f"{name}: data not contiguous"
        end = e_
        out[name] = (e["dtype"], tuple(e["shape"]), data[b:e_])
    assert end == len(data), "trailing bytes after the last tensor"
    return out, meta


def write_safetensors(outdir):
    rng = np.random.default_rng(SEED + 11)
    entries = safetensors_tensors(rng)
    with open(os.path.join(outdir, "reference.safetensors"), "wb") as f:
        f.write(build_safetensors(entries, SAFETENSORS_METADATA))
    tensors = []
    for name, dtype, array in entries:
        tensors.append({
            "name": name, "dtype": dtype, "shape": list(array.shape),
            "source": write_raw(outdir, f"st.{name}.src", array),
            "dequantized": write_raw(outdir, f"st.{name}.deq.f32",
                                     safetensors_float32(dtype, array)),
        })
    return {"file": "reference.safetensors", "ours": "ours.safetensors",
            "metadata": SAFETENSORS_METADATA, "tensors": tensors}


# ---------------------------------------------------------------------------

def generate(outdir):
    os.makedirs(outdir, exist_ok=True)
    manifest = {
        "gguf": [write_gguf(outdir, "reference.gguf", 32, SEED),
                 write_gguf(outdir, "reference_align64.gguf", 64, SEED + 1)],
        "stress": write_stress(outdir),
        "conversions": write_conversions(outdir),
        "safetensors": write_safetensors(outdir),
    }
    with open(os.path.join(outdir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"wrote reference fixtures to {outdir}")


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def verify_gguf(outdir, spec):
    path = os.path.join(outdir, spec["ours"])
    r = gguf.GGUFReader(path)
    raw = open(path, "rb").read()
    # gguf.cpp's rules: alignment, data section start, consecutive offsets.
    check(r.alignment == spec["alignment"], f"{path}: alignment {r.alignment}")
    check(r.data_offset % r.alignment == 0, f"{path}: data section misaligned")
    keys = [k for k in r.fields if not k.startswith("GGUF.")]
    check(keys == [e["key"] for e in spec["kv"]], f"{path}: key order {keys}")
    for e in spec["kv"]:
        field = r.fields[e["key"]]
        check(int(field.types[0]) == e["type"], f"{e['key']}: type {field.types}")
        if e["sub_type"] is not None:
            check(int(field.types[-1]) == e["sub_type"], f"{e['key']}: sub type")
        value = field.contents()
        check(value == e["value"], f"{e['key']}: {value!r} != {e['value']!r}")
    expected_offset = 0
    check(len(r.tensors) == len(spec["tensors"]), f"{path}: tensor count")
    for t, ref in zip(r.tensors, spec["tensors"]):
        check(t.name == ref["name"], f"tensor {t.name} != {ref['name']}")
        check(len(t.name) < 64, f"tensor {t.name}: name too long for ggml")
        check(int(t.tensor_type) == ref["ggml_type"], f"{t.name}: type")
        check([int(d) for d in t.shape] == ref["dims"], f"{t.name}: dims")
        offset = t.data_offset - r.data_offset
        check(offset == expected_offset, f"{t.name}: offset {offset}, "
              f"gguf.cpp expects {expected_offset}")
        expected_offset += -(-t.n_bytes // r.alignment) * r.alignment
        deq = gguf.quants.dequantize(t.data, t.tensor_type) \
            if t.tensor_type in (QT.F16, QT.BF16, QT.TQ1_0, QT.TQ2_0) \
            else np.asarray(t.data).astype(np.float32)
        want = np.fromfile(os.path.join(outdir, ref["dequantized"]), np.float32)
        check(np.array_equal(deq.reshape(-1).view(np.uint32), want.view(np.uint32)),
              f"{t.name}: values differ from the reference")
    check(r.data_offset + expected_offset <= len(raw), f"{path}: data truncated")
    print(f"{spec['ours']}: read by gguf-py, {len(keys)} keys and "
          f"{len(r.tensors)} tensors match")


def verify_safetensors(outdir, spec):
    path = os.path.join(outdir, spec["ours"])
    tensors, meta = parse_safetensors(path)
    check(meta == spec["metadata"], f"{path}: metadata {meta}")
    check(list(tensors) == [t["name"] for t in spec["tensors"]], f"{path}: order")
    for ref in spec["tensors"]:
        dtype, shape, data = tensors[ref["name"]]
        check(dtype == ref["dtype"], f"{ref['name']}: dtype {dtype}")
        check(list(shape) == ref["shape"], f"{ref['name']}: shape {shape}")
        src = open(os.path.join(outdir, ref["source"]), "rb").read()
        check(data == src, f"{ref['name']}: bytes differ")
    print(f"{spec['ours']}: {len(tensors)} tensors match")


def verify(outdir):
    with open(os.path.join(outdir, "manifest.json")) as f:
        manifest = json.load(f)
    for spec in manifest["gguf"]:
        verify_gguf(outdir, spec)
    verify_safetensors(outdir, manifest["safetensors"])


def main(argv):
    if len(argv) != 3 or argv[1] not in ("generate", "verify"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[1] == "generate":
        # Overflow to inf (fp16 scales, conversion tables) is intended here.
        with np.errstate(over="ignore", invalid="ignore"):
            generate(argv[2])
    else:
        verify(argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
