#!/usr/bin/python3
"""Reads what bitloom's trainer exported with independent code.

    adapter_interop_check.py OUTDIR

OUTDIR is written by bitloom-trainer-interop-export. Checks, with numpy and
the standard library only plus the vendored llama.cpp gguf-py:
  - PEFT adapter_model.safetensors (F32 and BF16) parse with a plain numpy
    safetensors reader (test/python/safetensors_io.py), with PEFT's tensor
    names, shapes and values (BF16: round-to-nearest-even of the F32 values);
    adapter_config.json has the keys PEFT and llama.cpp's converter read;
  - the GGUF LoRA files (F32 and F16) parse with gguf-py's GGUFReader, with
    the keys convert_lora_to_gguf.py writes (general.architecture bitnet,
    general.type adapter, adapter.type lora, adapter.lora.alpha as FLOAT32),
    tensors blk.N.<module>.weight.lora_a / lora_b of ne (in, r) / (r, out),
    holding the PEFT matrices (F16: numpy's float16 rounding); and they equal
    the file gguf-py's GGUFWriter writes from the same arrays the way the
    converter calls it (same keys, values, tensor infos and data);
  - the checkpoint's state.safetensors parses with the plain reader too;
  - the loss plot is well-formed SVG with a train curve and validation points.
"""

import json
import os
import sys
import xml.etree.ElementTree as ET

import numpy as np

sys.dont_write_bytecode = True  # keep the source tree clean under ctest
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..", "..")
sys.path.insert(0, os.path.join(ROOT, "test", "python"))
sys.path.insert(0, os.path.join(ROOT, "test", "third_party", "gguf-py"))

import gguf  # noqa: E402
import safetensors_io  # noqa: E402

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)


def field_value(reader, key):
    f = reader.get_field(key)
    if f is None:
        return None
    return f.contents()


def check_peft(out, expected, sub, bf16):
    d = os.path.join(out, sub)
    cfg = json.load(open(os.path.join(d, "adapter_config.json")))
    for key, want in [("peft_type", "LORA"), ("r", expected["rank"]),
                      ("lora_alpha", expected["alpha"]),
                      ("lora_dropout", expected["dropout"]), ("bias", "none"),
                      ("task_type", "CAUSAL_LM"), ("fan_in_fan_out", False),
                      ("use_rslora", False),
                      ("base_model_name_or_path", "bitloom/tiny")]:
        check(cfg.get(key) == want, f"{sub}: adapter_config.json {key} = {cfg.get(key)!r}, want {want!r}")
    check(sorted(cfg.get("target_modules", [])) == sorted(expected["target_modules"]),
          f"{sub}: target_modules {cfg.get('target_modules')}")
    path = os.path.join(d, "adapter_model.safetensors")
    header, meta, _ = safetensors_io.read_header(path)
    check(meta.get("format") == "pt", f"{sub}: metadata format")
    tensors = safetensors_io.load(path)
    check(sorted(tensors) == sorted(expected["tensors"]), f"{sub}: tensor names differ")
    for name, e in expected["tensors"].items():
        a = tensors.get(name)
        if a is None:
            continue
        check(list(a.shape) == e["shape"], f"{sub}: {name} shape {a.shape}")
        check(header[name]["dtype"] == ("BF16" if bf16 else "F32"), f"{sub}: {name} dtype")
        want = np.array(e["values"], dtype=np.float32).reshape(e["shape"])
        if bf16:
            want = safetensors_io.bf16_bits_to_f32(safetensors_io.f32_to_bf16_bits(want)).reshape(e["shape"])
        check(np.array_equal(a.astype(np.float32), want), f"{sub}: {name} values")


def converter_reference(path, expected, f16):
    """The GGUF convert_lora_to_gguf.py writes for these arrays: its
    LoraModel.set_type / set_gguf_parameters, ModelBase's file type and
    quantization version, tensors as (dest_name + '.lora_a', lora_a)."""
    w = gguf.GGUFWriter(path, "bitnet")
    w.add_type("adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(expected["alpha"]))
    w.add_name("tiny-lora")
    w.add_quantization_version(2)
    w.add_file_type(1 if f16 else 0)
    for name, e in expected["tensors"].items():
        a = np.array(e["values"], dtype=np.float32).reshape(e["shape"])
        w.add_tensor(e["gguf"], a.astype(np.float16) if f16 else a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gguf_summary(path):
    r = gguf.GGUFReader(path)
    kv = {}
    for key, f in r.fields.items():
        if key.startswith("GGUF."):
            continue
        kv[key] = (tuple(int(t) for t in f.types), f.contents())
    tensors = {t.name: (int(t.tensor_type), [int(x) for x in t.shape], np.array(t.data)) for t in r.tensors}
    return r, kv, tensors


def check_gguf(out, expected, name, f16):
    path = os.path.join(out, name)
    r, kv, tensors = gguf_summary(path)
    check(field_value(r, "general.architecture") == "bitnet", f"{name}: general.architecture")
    check(field_value(r, "general.type") == "adapter", f"{name}: general.type")
    check(field_value(r, "adapter.type") == "lora", f"{name}: adapter.type")
    alpha = r.get_field("adapter.lora.alpha")
    check(alpha is not None and alpha.types == [gguf.GGUFValueType.FLOAT32], f"{name}: adapter.lora.alpha type")
    check(alpha is not None and alpha.contents() == float(expected["alpha"]), f"{name}: adapter.lora.alpha value")
    want_type = gguf.GGMLQuantizationType.F16 if f16 else gguf.GGMLQuantizationType.F32
    check(len(tensors) == len(expected["tensors"]), f"{name}: {len(tensors)} tensors")
    for peft_name, e in expected["tensors"].items():
        g = e["gguf"]
        if g not in tensors:
            check(False, f"{name}: missing {g}")
            continue
        ttype, ne, data = tensors[g]
        rows, cols = e["shape"]
        check(ttype == int(want_type), f"{name}: {g} type {ttype}")
        # ggml ne is innermost first: (cols, rows) = (in, r) for lora_a and
        # (r, out) for lora_b, as llama-adapter.cpp checks.
        check(ne == [cols, rows], f"{name}: {g} ne {ne}")
        want = np.array(e["values"], dtype=np.float32).reshape(rows, cols)
        if f16:
            want = want.astype(np.float16)
        check(np.array_equal(data.reshape(rows, cols), want), f"{name}: {g} data")
    ref = os.path.join(out, name + ".reference.gguf")
    converter_reference(ref, expected, f16)
    _, kv_ref, tensors_ref = gguf_summary(ref)
    check(kv == kv_ref, f"{name}: metadata differs from the converter's: {sorted(set(kv.items()) ^ set(kv_ref.items()), key=str)}")
    check(sorted(tensors) == sorted(tensors_ref), f"{name}: tensor names differ from the converter's")
    for t in tensors:
        if t in tensors_ref:
            a, b = tensors[t], tensors_ref[t]
            check(a[0] == b[0] and a[1] == b[1] and np.array_equal(a[2], b[2]), f"{name}: {t} differs from the converter's")


def check_checkpoint(out, expected):
    path = os.path.join(out, "checkpoint", "state.safetensors")
    _, meta, _ = safetensors_io.read_header(path)
    check(meta.get("format") == "bitloom-checkpoint", "checkpoint metadata format")
    check(json.loads(meta.get("identity", "{}")).get("lora", {}).get("rank") == expected["rank"], "checkpoint identity")
    tensors = safetensors_io.load(path)
    adapter = {k[len("adapter/"):]: v for k, v in tensors.items() if k.startswith("adapter/")}
    check(sorted(adapter) == sorted(expected["tensors"]), "checkpoint adapter names")
    check(sum(k.startswith("optimizer/") for k in tensors) == 1, "checkpoint optimizer state")
    manifest = json.load(open(os.path.join(out, "checkpoint", "manifest.json")))
    check(manifest["step"] == 3 and manifest["files"]["state.safetensors"]["bytes"] == os.path.getsize(path),
          "checkpoint manifest")


def check_svg(out):
    path = os.path.join(out, "metrics.svg")
    root = ET.parse(path).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    check(root.tag == ns + "svg", "svg root")
    lines = [e for e in root.iter(ns + "polyline") if e.get("id") == "train-loss"]
    check(len(lines) == 1 and len(lines[0].get("points").split()) == 120, "svg train curve")
    groups = [e for e in root.iter(ns + "g") if e.get("id") == "validation-loss"]
    check(len(groups) == 1 and len(list(groups[0].iter(ns + "circle"))) == 3, "svg validation points")
    texts = [e.text for e in root.iter(ns + "text")]
    check("step" in texts and "loss" in texts and "interop <check>" in texts, "svg labels")


def main():
    out = sys.argv[1]
    expected = json.load(open(os.path.join(out, "expected.json")))
    check_peft(out, expected, "peft", bf16=False)
    check_peft(out, expected, "peft-bf16", bf16=True)
    check_gguf(out, expected, "lora-f32.gguf", f16=False)
    check_gguf(out, expected, "lora-f16.gguf", f16=True)
    check_checkpoint(out, expected)
    check_svg(out)
    if failures:
        for f in failures:
            print("FAIL:", f)
        return 1
    print("trainer interop: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
