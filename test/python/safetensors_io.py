"""Minimal safetensors reader/writer using numpy only.

Format (https://github.com/huggingface/safetensors): an 8-byte little-endian
unsigned header length N, N bytes of UTF-8 JSON, then the data buffer. The JSON
maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} with
offsets relative to the start of the data buffer; an optional "__metadata__"
entry maps strings to strings. Tensors are little-endian, row-major.

BF16 has no numpy dtype: the reader widens it to float32 exactly (the 16 bits
become the top half of a float32), the writer narrows float32 with
round-to-nearest-even (what torch's .to(torch.bfloat16) does).
"""

import json
import struct

import numpy as np

# safetensors dtype string -> numpy dtype of the stored elements.
_STORED = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # widened to float32 on read
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}

_FROM_NUMPY = {
    np.dtype("float64"): "F64",
    np.dtype("float32"): "F32",
    np.dtype("float16"): "F16",
    np.dtype("int64"): "I64",
    np.dtype("int32"): "I32",
    np.dtype("int16"): "I16",
    np.dtype("int8"): "I8",
    np.dtype("uint8"): "U8",
    np.dtype("bool"): "BOOL",
}


def bf16_bits_to_f32(bits):
    """uint16 bfloat16 bit patterns -> float32 (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(x):
    """float32 -> uint16 bfloat16 bit patterns, round to nearest even (NaN kept NaN)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    out = rounded.astype(np.uint16)
    out[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)  # quiet NaN
    return out


def read_header(path):
    """Returns (header dict without __metadata__, metadata dict, data start offset)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: too short for a safetensors file")
        (n,) = struct.unpack("<Q", raw)
        header = json.loads(f.read(n).decode("utf-8"))
    metadata = header.pop("__metadata__", None) or {}
    return header, metadata, 8 + n


def load(path, names=None, keep_dtype=False):
    """Reads tensors from a .safetensors file.

    Returns {name: np.ndarray}. BF16 comes back as float32 (exact); F16 stays
    float16; integers keep their type. With keep_dtype=True returns
    {name: (array, dtype_string)} instead. `names` restricts what is read.
    """
    header, _, start = read_header(path)
    out = {}
    data = np.memmap(path, dtype=np.uint8, mode="r")
    for name, info in header.items():
        if names is not None and name not in names:
            continue
        dt = info["dtype"]
        if dt not in _STORED:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {dt}")
        stored = _STORED[dt]
        shape = tuple(int(d) for d in info["shape"])
        begin, end = (int(v) for v in info["data_offsets"])
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if end - begin != count * stored.itemsize or start + end > data.size:
            raise ValueError(f"{path}: tensor {name}: bad data_offsets {info['data_offsets']}")
        arr = np.frombuffer(data[start + begin:start + end].tobytes(), dtype=stored).reshape(shape)
        if dt == "BF16":
            arr = bf16_bits_to_f32(arr).reshape(shape)
        else:
            arr = arr.astype(stored.newbyteorder("="), copy=True)
        out[name] = (arr, dt) if keep_dtype else arr
    del data
    return out


def save(path, tensors, metadata=None, dtypes=None):
    """Writes {name: array} to a .safetensors file.

    The stored dtype follows the array's numpy dtype, except names listed in
    `dtypes` ({name: "BF16" | "F16" | "F32" ...}), which are converted first
    (float -> BF16 rounds to nearest even). The JSON header is padded with
    spaces so that the data buffer starts at a multiple of 8 bytes.
    """
    dtypes = dtypes or {}
    header = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        dt = dtypes.get(name)
        if dt is None:
            if arr.dtype not in _FROM_NUMPY:
                raise ValueError(f"tensor {name}: unsupported numpy dtype {arr.dtype}")
            dt = _FROM_NUMPY[arr.dtype]
        if dt == "BF16":
            stored = f32_to_bf16_bits(arr.astype(np.float32))
        else:
            stored = np.ascontiguousarray(arr.astype(_STORED[dt]))
        blob = np.ascontiguousarray(stored).tobytes()
        header[name] = {"dtype": dt, "shape": [int(d) for d in arr.shape],
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    if metadata:
        header = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}, **header}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
