#!/usr/bin/env python3
"""Independent PyTorch reference for bitloom's LoRA training step on BitNet b1.58.

It re-implements, in plain float32 torch, what Hugging Face transformers' BitNet
model (src/transformers/models/bitnet/modeling_bitnet.py) with AutoBitLinear
layers (src/transformers/integrations/bitnet.py) computes when PEFT's LoRA
(src/peft/tuners/lora/layer.py, Linear.forward) wraps its projections, and
trains the LoRA parameters with torch.optim.AdamW / torch.optim.SGD. ctest runs
it next to `bitloom step` and compares the two outputs with compare_outputs.py.

Where HF's code differs from /work/shared/BITNET.md, this file follows HF and
says so in a comment marked "HF vs BITNET.md".

Everything runs in float32, i.e. it is HF's model loaded with
torch_dtype=torch.float32 (bf16/f16 checkpoint tensors are widened exactly on
load). HF run in bf16 would also round activations and the dequantized weights
to bf16; bitloom's numerics are float32, so that is what is compared. Attention
is HF's "eager" path (explicit softmax in float32); HF's default "sdpa" computes
the same function with a different rounding.

Usage (see README.md):
  bitnet_reference.py MODEL_DIR --tokens IDS.txt [--mask MASK.txt]
      [--adapter PEFT_DIR | --lora-rank R --lora-alpha A --lora-targets T]
      [--steps N --lr X --weight-decay W --optimizer adamw|sgd --momentum M]
      --out OUT.safetensors
  bitnet_reference.py MODEL_DIR --write-adapter DIR --lora-rank R --lora-alpha A
      --lora-targets T --seed S [--nonzero-b]
  bitnet_reference.py --self-test
"""

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io as st  # noqa: E402

torch.set_default_dtype(torch.float32)

# bitloom short name -> HF module path inside a decoder layer, in canonical order
# (the order PEFT meets them when it walks the model: attention, then MLP).
PROJECTIONS = [
    ("q", "self_attn.q_proj"),
    ("k", "self_attn.k_proj"),
    ("v", "self_attn.v_proj"),
    ("o", "self_attn.o_proj"),
    ("gate", "mlp.gate_proj"),
    ("up", "mlp.up_proj"),
    ("down", "mlp.down_proj"),
]
SHORT_TO_MODULE = dict(PROJECTIONS)
SHORT_NAMES = [s for s, _ in PROJECTIONS]
GROUPS = {"attn": ["q", "k", "v", "o"], "ffn": ["gate", "up", "down"], "all": SHORT_NAMES}


def parse_targets(spec):
    """'q,v' / 'attn' / 'ffn' / 'all' / 'q_proj,...' -> short names in canonical order."""
    wanted = set()
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part in GROUPS:
            wanted.update(GROUPS[part])
            continue
        hit = [s for s, m in PROJECTIONS if part == s or part == m.split(".")[-1]]
        if not hit:
            raise SystemExit(f"--lora-targets: unknown target '{part}' "
                             "(expected q,k,v,o,gate,up,down, attn, ffn or all)")
        wanted.update(hit)
    if not wanted:
        raise SystemExit("--lora-targets: no targets given")
    return [s for s in SHORT_NAMES if s in wanted]


# ----------------------------------------------------------------------------
# Checkpoint
# ----------------------------------------------------------------------------

class Config:
    """The config.json fields the forward pass needs, with BitNetConfig's defaults."""

    def __init__(self, d):
        if d.get("model_type", "bitnet") != "bitnet":
            raise SystemExit(f"config.json: model_type {d.get('model_type')!r} is not 'bitnet'")
        self.vocab_size = int(d.get("vocab_size", 128256))
        self.hidden_size = int(d.get("hidden_size", 2560))
        self.intermediate_size = int(d.get("intermediate_size", 6912))
        self.num_hidden_layers = int(d.get("num_hidden_layers", 30))
        self.num_attention_heads = int(d.get("num_attention_heads", 20))
        kv = d.get("num_key_value_heads")
        self.num_key_value_heads = int(kv if kv is not None else self.num_attention_heads)
        hd = d.get("head_dim")
        self.head_dim = int(hd if hd is not None else self.hidden_size // self.num_attention_heads)
        self.rms_norm_eps = float(d.get("rms_norm_eps", 1e-5))
        theta = d.get("rope_theta")
        rope_parameters = d.get("rope_parameters") or {}
        if theta is None:
            theta = rope_parameters.get("rope_theta", 500000.0)
        self.rope_theta = float(theta)
        rope_type = (d.get("rope_scaling") or {}).get("rope_type") or rope_parameters.get("rope_type")
        if rope_type not in (None, "default"):
            raise SystemExit(f"config.json: rope type {rope_type!r} is not supported")
        self.hidden_act = d.get("hidden_act", "relu2")
        if self.hidden_act != "relu2":
            raise SystemExit(f"config.json: hidden_act {self.hidden_act!r} (expected relu2)")
        if d.get("attention_bias", False):
            raise SystemExit("config.json: attention_bias true is not supported")
        # BitNetConfig passes tie_word_embeddings=False to PretrainedConfig by default.
        self.tie_word_embeddings = bool(d.get("tie_word_embeddings", False))

    def dims(self, short):
        """(in_features, out_features) of a projection."""
        h, f = self.hidden_size, self.intermediate_size
        q, kv = self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        return {"q": (h, q), "k": (h, kv), "v": (h, kv), "o": (q, h),
                "gate": (h, f), "up": (h, f), "down": (f, h)}[short]


def load_model_dir(model_dir):
    """config.json + model.safetensors (or sharded index) -> (Config, {name: np.ndarray})."""
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = Config(json.load(f))
    single = os.path.join(model_dir, "model.safetensors")
    index = os.path.join(model_dir, "model.safetensors.index.json")
    tensors = {}
    if os.path.exists(single):
        tensors = st.load(single)
    elif os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        for shard in sorted(set(weight_map.values())):
            names = {n for n, s in weight_map.items() if s == shard}
            tensors.update(st.load(os.path.join(model_dir, shard), names=names))
    else:
        raise SystemExit(f"{model_dir}: neither model.safetensors nor model.safetensors.index.json")
    return cfg, tensors


# ----------------------------------------------------------------------------
# BitLinear quantizers, as in HF's src/transformers/integrations/bitnet.py
# ----------------------------------------------------------------------------
#
# HF vs BITNET.md / the brief (STE): HF writes both quantizers as
# torch.autograd.Function subclasses (WeightQuant, ActQuant) whose backward is
# `grad_output.clone()`: the gradient is the identity, through the rounding,
# the clamp and the scale alike. That is the same gradient as the
# `x + (q(x) - x).detach()` idiom, but the forward differs: HF returns q(x)
# itself, while the idiom returns x + (q(x) - x), which can differ from q(x) in
# the last bit. We follow HF (autograd.Function, forward = q(x) exactly).
#
# HF vs BITNET.md (weight quantizer arithmetic): WeightQuant computes
# s = 1.0 / clamp(mean|W|, 1e-5) and W_q = clamp(round(W * s), -1, 1) / s,
# i.e. it multiplies by the reciprocal of the mean and divides by it afterwards;
# BITNET.md writes round(W / mean) and (x_q . W_t^T) * mean / a. Identical in
# exact arithmetic, not bit for bit in float32. We follow HF.
#
# HF vs BITNET.md (where the scales are applied): AutoBitLinear dequantizes
# first, then multiplies: y = F.linear(x_q / a, W_t / s) (online) or
# y = F.linear(x_q / a, W_t) * weight_scale (offline). BITNET.md writes
# (x_q . W_t^T) * s / a. Same value up to float32 rounding (self-test (e)
# measures it). We follow HF.
#
# HF computes the quantizers after `x.float()`; here they run in the model's
# dtype, which is float32 except in the float64 finite-difference self-test.

class WeightQuant(torch.autograd.Function):
    """HF WeightQuant: per-tensor absmean ternarization, identity gradient."""

    @staticmethod
    def forward(ctx, w, rounding=True):
        s = 1.0 / w.abs().mean().clamp(min=1e-5)
        ws = w * s
        if rounding:
            ws = ws.round()
        return ws.clamp(-1, 1) / s

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output.clone(), None


class ActQuant(torch.autograd.Function):
    """HF ActQuant: per-token absmax int8 fake quantization, identity gradient."""

    @staticmethod
    def forward(ctx, x, rounding=True):
        s = 127 / x.abs().max(dim=-1, keepdim=True).values.clamp(min=1e-5)
        xs = x * s
        if rounding:
            xs = xs.round()
        return xs.clamp(-128, 127) / s

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output.clone(), None


def unpack_weights(packed):
    """HF unpack_weights: uint8 [out/4, in] -> ternary float32 [out, in].

    Packed row r holds rows r + i * (out/4) (i = 0..3) in bits 2i..2i+1,
    stored as value + 1.
    """
    packed = np.asarray(packed, dtype=np.uint8)
    rows = packed.shape[0]
    out = np.empty((rows * 4,) + packed.shape[1:], dtype=np.float32)
    for i in range(4):
        out[i * rows:(i + 1) * rows] = ((packed >> (2 * i)) & 3).astype(np.float32) - 1.0
    return out


def pack_weights(ternary):
    """HF pack_weights (for out divisible by 4): ternary [out, in] -> uint8 [out/4, in]."""
    t = np.asarray(ternary)
    if t.shape[0] % 4:
        raise ValueError("out_features must be a multiple of 4")
    rows = t.shape[0] // 4
    codes = (t.astype(np.int64) + 1).astype(np.uint8)
    packed = np.zeros((rows,) + t.shape[1:], dtype=np.uint8)
    for i in range(4):
        packed |= codes[i * rows:(i + 1) * rows] << (2 * i)
    return packed


# ----------------------------------------------------------------------------
# LoRA, as PEFT does it
# ----------------------------------------------------------------------------

def peft_name(layer, short, which):
    """PEFT's saved tensor name, e.g. base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight."""
    return f"base_model.model.model.layers.{layer}.{SHORT_TO_MODULE[short]}.lora_{which}.weight"


class LoRA:
    """A LoRA adapter: {(layer, short): (A [r, in], B [out, r])} and its scaling.

    PEFT (tuners/lora/layer.py, LoraLayer.update_layer): scaling = lora_alpha / r
    (lora_alpha / sqrt(r) with use_rslora); Linear.forward:
    result = base_layer(x) + lora_B(lora_A(dropout(x))) * scaling, with x the
    layer's input before any quantization (the BitLinear quantizes inside
    base_layer). Dropout is 0 here.
    """

    def __init__(self, r, alpha, use_rslora=False):
        self.r = int(r)
        self.alpha = alpha
        self.use_rslora = bool(use_rslora)
        self.scaling = alpha / math.sqrt(self.r) if self.use_rslora else alpha / self.r
        self.modules = {}

    def targets(self):
        return [s for s in SHORT_NAMES if any(k[1] == s for k in self.modules)]

    def named_parameters(self):
        """[(peft name, tensor)] in PEFT's order: layer, projection, A then B."""
        out = []
        for (layer, short) in sorted(self.modules, key=lambda k: (k[0], SHORT_NAMES.index(k[1]))):
            a, b = self.modules[(layer, short)]
            out.append((peft_name(layer, short, "A"), a))
            out.append((peft_name(layer, short, "B"), b))
        return out

    def to(self, dtype):
        new = LoRA(self.r, self.alpha, self.use_rslora)
        for key, (a, b) in self.modules.items():
            new.modules[key] = (a.detach().to(dtype).clone().requires_grad_(True),
                                b.detach().to(dtype).clone().requires_grad_(True))
        return new

    @staticmethod
    def random(cfg, r, alpha, targets, seed, nonzero_b=False):
        """A as PEFT's reset_lora_parameters: kaiming_uniform_(a=sqrt(5)) (uniform in
        +-1/sqrt(in)); B zero, or N(0, 0.02^2) with nonzero_b."""
        lora = LoRA(r, alpha)
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        for layer in range(cfg.num_hidden_layers):
            for short in targets:
                fan_in, fan_out = cfg.dims(short)
                a = torch.empty(r, fan_in, dtype=torch.float32)
                torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5))
                b = torch.zeros(fan_out, r, dtype=torch.float32)
                if nonzero_b:
                    torch.nn.init.normal_(b, std=0.02)
                lora.modules[(layer, short)] = (a.requires_grad_(True), b.requires_grad_(True))
        torch.random.set_rng_state(gen_state)
        return lora

    @staticmethod
    def load_peft_dir(path, cfg):
        with open(os.path.join(path, "adapter_config.json")) as f:
            conf = json.load(f)
        if conf.get("peft_type", "LORA") != "LORA":
            raise SystemExit(f"{path}: peft_type {conf.get('peft_type')!r} is not LORA")
        if conf.get("use_dora") or conf.get("fan_in_fan_out"):
            raise SystemExit(f"{path}: use_dora / fan_in_fan_out adapters are not supported")
        lora = LoRA(conf["r"], conf["lora_alpha"], conf.get("use_rslora", False))
        targets = peft_target_short_names(conf.get("target_modules"))
        layers = conf.get("layers_to_transform")
        if isinstance(layers, int):
            layers = [layers]
        tensors = st.load(os.path.join(path, "adapter_model.safetensors"))
        for layer in range(cfg.num_hidden_layers):
            if layers is not None and layer not in layers:
                continue
            for short in targets:
                na, nb = peft_name(layer, short, "A"), peft_name(layer, short, "B")
                if na not in tensors or nb not in tensors:
                    raise SystemExit(f"{path}: adapter lacks {na} / {nb}")
                fan_in, fan_out = cfg.dims(short)
                a = torch.from_numpy(tensors[na].astype(np.float32))
                b = torch.from_numpy(tensors[nb].astype(np.float32))
                if tuple(a.shape) != (lora.r, fan_in) or tuple(b.shape) != (fan_out, lora.r):
                    raise SystemExit(f"{path}: {na} / {nb} have shapes {tuple(a.shape)} / "
                                     f"{tuple(b.shape)}, expected {(lora.r, fan_in)} / {(fan_out, lora.r)}")
                lora.modules[(layer, short)] = (a.requires_grad_(True), b.requires_grad_(True))
        return lora

    def save_peft_dir(self, path, base_model_name_or_path):
        os.makedirs(path, exist_ok=True)
        st.save(os.path.join(path, "adapter_model.safetensors"),
                {n: p.detach().to(torch.float32).numpy() for n, p in self.named_parameters()})
        conf = {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model_name_or_path,
            "r": self.r,
            "lora_alpha": self.alpha,
            "lora_dropout": 0.0,
            "target_modules": [SHORT_TO_MODULE[s].split(".")[-1] for s in self.targets()],
            "bias": "none",
            "fan_in_fan_out": False,
            "use_rslora": self.use_rslora,
            "use_dora": False,
            "init_lora_weights": True,
            "inference_mode": True,
            "modules_to_save": None,
            "layers_to_transform": None,
        }
        with open(os.path.join(path, "adapter_config.json"), "w") as f:
            json.dump(conf, f, indent=2)
            f.write("\n")


def peft_target_short_names(target_modules):
    """PEFT's target_modules matching on the decoder projections: a list matches a
    module whose name equals an entry or ends with '.' + entry; a string is a
    regex that must fullmatch the module name; 'all-linear' is every projection
    (lm_head excluded)."""
    if target_modules is None:
        raise SystemExit("adapter_config.json: target_modules missing")
    out = []
    for short, module in PROJECTIONS:
        key = f"model.layers.0.{module}"
        if target_modules == "all-linear":
            hit = True
        elif isinstance(target_modules, str):
            hit = re.fullmatch(target_modules, key) is not None
        else:
            hit = any(key == t or key.endswith("." + t) for t in target_modules)
        if hit:
            out.append(short)
    if not out:
        raise SystemExit(f"adapter_config.json: target_modules {target_modules!r} match no projection")
    return out


# ----------------------------------------------------------------------------
# The model, as HF's modeling_bitnet.py computes it
# ----------------------------------------------------------------------------

def rms_norm(x, weight, eps):
    """BitNetRMSNorm: w * (x * rsqrt(mean(x^2) + eps)), computed in float32 (our dtype)."""
    variance = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class BitNetReference:
    """Frozen BitNet b1.58 weights plus a forward pass that takes an optional LoRA."""

    def __init__(self, cfg, tensors, dtype=torch.float32, quantize=True):
        self.cfg = cfg
        self.dtype = dtype
        self.quantize = quantize

        def dense(name):
            if name not in tensors:
                raise SystemExit(f"checkpoint lacks tensor {name}")
            return torch.from_numpy(np.asarray(tensors[name], dtype=np.float32)).to(dtype)

        self.embed = dense("model.embed_tokens.weight")
        if cfg.tie_word_embeddings or "lm_head.weight" not in tensors:
            self.lm_head = self.embed  # tied: logits = h . E^T (lm_head is never ternary)
        else:
            self.lm_head = dense("lm_head.weight")
        self.final_norm = dense("model.norm.weight")
        self.layers = []
        for i in range(cfg.num_hidden_layers):
            p = f"model.layers.{i}."
            layer = {
                "input_layernorm": dense(p + "input_layernorm.weight"),
                "attn_sub_norm": dense(p + "self_attn.attn_sub_norm.weight"),
                "post_attention_layernorm": dense(p + "post_attention_layernorm.weight"),
                "ffn_sub_norm": dense(p + "mlp.ffn_sub_norm.weight"),
            }
            for short, module in PROJECTIONS:
                layer[short] = self._projection(tensors, p + module, cfg.dims(short), dense)
            self.layers.append(layer)

    def _projection(self, tensors, prefix, dims, dense):
        """-> (weight used by F.linear, weight_scale or None).

        Online (float master weights): HF AutoBitLinear(online_quant=True) runs
        WeightQuant on every forward; the weights are frozen, so it is computed
        once here (same value). Offline (uint8 packed + weight_scale): HF
        AutoBitLinear(online_quant=False) unpacks in its load hook and
        multiplies the output by weight_scale.

        HF vs BITNET.md: HF's older inference class BitLinear (linear_class
        "bitlinear") divides by weight_scale instead (post_quant_process:
        y / (input_scale * weight_scale)). We follow AutoBitLinear, BITNET.md and
        llama.cpp's converter (which writes unpacked * weight_scale): multiply.
        """
        fan_in, fan_out = dims
        w = tensors.get(prefix + ".weight")
        if w is None:
            raise SystemExit(f"checkpoint lacks tensor {prefix}.weight")
        if w.dtype == np.uint8:
            if prefix + ".weight_scale" not in tensors:
                raise SystemExit(f"{prefix}.weight is packed uint8 but {prefix}.weight_scale is missing")
            tern = unpack_weights(w)
            if tern.shape != (fan_out, fan_in):
                raise SystemExit(f"{prefix}.weight unpacks to {tern.shape}, expected {(fan_out, fan_in)}")
            scale = dense(prefix + ".weight_scale").reshape(-1)
            if scale.numel() != 1:
                raise SystemExit(f"{prefix}.weight_scale must hold one element")
            return torch.from_numpy(tern).to(self.dtype), scale
        w = dense(prefix + ".weight")
        if tuple(w.shape) != (fan_out, fan_in):
            raise SystemExit(f"{prefix}.weight has shape {tuple(w.shape)}, expected {(fan_out, fan_in)}")
        with torch.no_grad():
            wq = WeightQuant.apply(w, self.quantize)
        return wq, None

    def bitlinear(self, layer, short, x):
        """HF AutoBitLinear.forward: F.linear(ActQuant(x), W) [* weight_scale]."""
        w, scale = self.layers[layer][short]
        y = F.linear(ActQuant.apply(x, self.quantize), w)
        if scale is not None:
            y = y * scale
        return y

    def projection(self, layer, short, x, lora):
        """PEFT lora.Linear.forward around the BitLinear: base(x) + B(A(x)) * scaling."""
        result = self.bitlinear(layer, short, x)
        if lora is not None and (layer, short) in lora.modules:
            a, b = lora.modules[(layer, short)]
            result = result + F.linear(F.linear(x, a), b) * lora.scaling
        return result

    def rope(self, seq_len):
        """BitNetRotaryEmbedding with rope_type default and positions 0..T-1, in float32."""
        dim = self.cfg.head_dim
        inv_freq = 1.0 / (self.cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        positions = torch.arange(seq_len, dtype=torch.int64).float()
        freqs = positions[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(self.dtype), emb.sin().to(self.dtype)

    def forward(self, ids, lora=None):
        """ids: int64 [B, T] -> logits [B, T, V]."""
        cfg = self.cfg
        bsz, seq = ids.shape
        hd = cfg.head_dim
        groups = cfg.num_attention_heads // cfg.num_key_value_heads
        eps = cfg.rms_norm_eps
        cos, sin = self.rope(seq)
        # HF's eager_attention_forward adds a causal mask holding finfo.min above the diagonal.
        mask = torch.full((seq, seq), torch.finfo(self.dtype).min, dtype=self.dtype).triu(1)
        # HF takes the softmax in float32; the float64 self-test keeps float64.
        softmax_dtype = torch.float64 if self.dtype == torch.float64 else torch.float32

        h = F.embedding(ids, self.embed)
        for i, w in enumerate(self.layers):
            residual = h
            x = rms_norm(h, w["input_layernorm"], eps)
            q = self.projection(i, "q", x, lora).view(bsz, seq, -1, hd).transpose(1, 2)
            k = self.projection(i, "k", x, lora).view(bsz, seq, -1, hd).transpose(1, 2)
            v = self.projection(i, "v", x, lora).view(bsz, seq, -1, hd).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            # repeat_kv: kv head j serves query heads j*g .. j*g+g-1.
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
            scores = torch.matmul(q, k.transpose(2, 3)) * (hd ** -0.5) + mask
            probs = F.softmax(scores, dim=-1, dtype=softmax_dtype).to(q.dtype)
            o = torch.matmul(probs, v).transpose(1, 2).contiguous().reshape(bsz, seq, -1)
            o = rms_norm(o, w["attn_sub_norm"], eps)
            h = residual + self.projection(i, "o", o, lora)

            residual = h
            x = rms_norm(h, w["post_attention_layernorm"], eps)
            gate = self.projection(i, "gate", x, lora)
            up = self.projection(i, "up", x, lora)
            f = torch.square(F.relu(gate)) * up  # ACT2FN["relu2"] = ReLUSquaredActivation
            f = rms_norm(f, w["ffn_sub_norm"], eps)
            h = residual + self.projection(i, "down", f, lora)
        h = rms_norm(h, self.final_norm, eps)
        return F.linear(h, self.lm_head)

    def loss(self, ids, labels, lora=None):
        """HF ForCausalLMLoss: logits.float(), labels padded with -100 on the right and
        shifted left by one, cross-entropy mean over labels != -100."""
        logits = self.forward(ids, lora)
        if self.dtype != torch.float64:
            logits = logits.float()
        labels = F.pad(labels, (0, 1), value=-100)[..., 1:].contiguous()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                               ignore_index=-100, reduction="mean")


def make_labels(ids, mask):
    """labels = ids, with -100 where mask == 0 (mask[:, 0] never matters: HF shifts)."""
    labels = ids.clone()
    if mask is not None:
        labels[mask == 0] = -100
    return labels


def read_int_rows(path, what):
    rows = []
    with open(path) as f:
        for line in f:
            if line.strip():
                rows.append([int(t) for t in line.split()])
    if not rows:
        raise SystemExit(f"{path}: no {what}")
    if len({len(r) for r in rows}) != 1:
        raise SystemExit(f"{path}: all {what} lines must have the same length")
    return torch.tensor(rows, dtype=torch.int64)


# ----------------------------------------------------------------------------
# Training step
# ----------------------------------------------------------------------------

def make_optimizer(params, name, lr, weight_decay, momentum):
    if name == "adamw":
        wd = 0.01 if weight_decay is None else weight_decay
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
    if name == "sgd":
        wd = 0.0 if weight_decay is None else weight_decay
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=wd)
    raise SystemExit(f"--optimizer: unknown optimizer {name!r}")


def train(model, lora, ids, labels, steps, optimizer):
    """Runs `steps` optimizer steps. Returns (losses before each step, first-step grads)."""
    named = lora.named_parameters()
    opt = make_optimizer([p for _, p in named], *optimizer)
    losses, grads = [], {}
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = model.loss(ids, labels, lora)
        loss.backward()
        losses.append(loss.item())
        if step == 0:
            grads = {n + ".grad": p.grad.detach().clone() for n, p in named}
        opt.step()
    return losses, grads


def run_step(args):
    cfg, tensors = load_model_dir(args.model_dir)
    model = BitNetReference(cfg, tensors, quantize=not args.no_quant)
    ids = read_int_rows(args.tokens, "token ids")
    if int(ids.max()) >= cfg.vocab_size or int(ids.min()) < 0:
        raise SystemExit(f"{args.tokens}: token id out of range [0, {cfg.vocab_size})")
    mask = read_int_rows(args.mask, "mask values") if args.mask else None
    if mask is not None and mask.shape != ids.shape:
        raise SystemExit(f"{args.mask}: shape {tuple(mask.shape)} differs from tokens {tuple(ids.shape)}")
    labels = make_labels(ids, mask)
    if int((labels[:, 1:] != -100).sum()) == 0:
        raise SystemExit("no prediction targets left after masking")
    if args.adapter:
        lora = LoRA.load_peft_dir(args.adapter, cfg)
    else:
        if args.lora_rank is None or args.lora_alpha is None or args.lora_targets is None:
            raise SystemExit("give --adapter, or --lora-rank, --lora-alpha and --lora-targets")
        lora = LoRA.random(cfg, args.lora_rank, args.lora_alpha, parse_targets(args.lora_targets),
                           args.seed, args.nonzero_b)
    losses, grads = train(model, lora, ids, labels, args.steps,
                          (args.optimizer, args.lr, args.weight_decay, args.momentum))
    out = {"loss": np.asarray(losses, dtype=np.float32)}
    for name, g in grads.items():
        out[name] = g.to(torch.float32).numpy()
    for name, p in lora.named_parameters():
        out[name] = p.detach().to(torch.float32).numpy()
    st.save(args.out, out)
    print(f"loss: {' '.join(f'{v:.7g}' for v in losses)}")
    return 0


def run_write_adapter(args):
    if args.lora_rank is None or args.lora_alpha is None or args.lora_targets is None:
        raise SystemExit("--write-adapter needs --lora-rank, --lora-alpha and --lora-targets")
    cfg, _ = load_model_dir(args.model_dir)
    lora = LoRA.random(cfg, args.lora_rank, args.lora_alpha, parse_targets(args.lora_targets),
                       args.seed, args.nonzero_b)
    lora.save_peft_dir(args.write_adapter, os.path.abspath(args.model_dir))
    return 0


# ----------------------------------------------------------------------------
# Self-test
# ----------------------------------------------------------------------------

TINY = {
    "model_type": "bitnet", "architectures": ["BitNetForCausalLM"],
    "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
    "rms_norm_eps": 1e-5, "hidden_act": "relu2", "tie_word_embeddings": True,
    "attention_bias": False, "bos_token_id": 1, "eos_token_id": 2,
}


def tiny_tensors(cfg, seed, untied=False):
    """Random float32 weights for a tiny model (master weights, online quantization)."""
    rng = np.random.default_rng(seed)
    t = {"model.embed_tokens.weight": rng.normal(0, 0.3, (cfg.vocab_size, cfg.hidden_size)),
         "model.norm.weight": 1 + 0.1 * rng.normal(size=cfg.hidden_size)}
    if untied:
        t["lm_head.weight"] = rng.normal(0, 0.2, (cfg.vocab_size, cfg.hidden_size))
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        for short, module in PROJECTIONS:
            fan_in, fan_out = cfg.dims(short)
            t[p + module + ".weight"] = rng.normal(0, 0.05, (fan_out, fan_in))
        t[p + "input_layernorm.weight"] = 1 + 0.1 * rng.normal(size=cfg.hidden_size)
        t[p + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.normal(size=cfg.hidden_size)
        t[p + "self_attn.attn_sub_norm.weight"] = 1 + 0.1 * rng.normal(size=cfg.hidden_size)
        t[p + "mlp.ffn_sub_norm.weight"] = 1 + 0.1 * rng.normal(size=cfg.intermediate_size)
    return {k: v.astype(np.float32) for k, v in t.items()}


def write_model_dir(path, config, tensors, dtypes=None, shards=1):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    if shards == 1:
        st.save(os.path.join(path, "model.safetensors"), tensors, metadata={"format": "pt"}, dtypes=dtypes)
        return
    names = sorted(tensors)
    weight_map = {}
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[s::shards]}
        st.save(os.path.join(path, fname), part, metadata={"format": "pt"},
                dtypes={n: d for n, d in (dtypes or {}).items() if n in part})
        weight_map.update({n: fname for n in part})
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)


def rel_norm(a, b):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).norm() / max(float(b.norm()), 1e-300))


def run_self_test():
    torch.manual_seed(0)
    results = []

    def check(name, ok, detail):
        results.append(ok)
        print(f"[{'PASS' if ok else 'FAIL'}] {name}: {detail}")

    tmp = tempfile.mkdtemp(prefix="bitnet_reference_selftest_")
    cfg = Config(TINY)
    tensors = tiny_tensors(cfg, seed=1)
    model_dir = os.path.join(tmp, "tiny")
    write_model_dir(model_dir, TINY, tensors)
    ids = torch.tensor([[1, 5, 9, 33, 7, 60, 12, 3], [2, 8, 8, 41, 19, 0, 63, 27]], dtype=torch.int64)
    mask = torch.tensor([[0, 1, 1, 1, 0, 1, 1, 1], [1, 1, 0, 0, 1, 1, 1, 1]], dtype=torch.int64)
    labels = make_labels(ids, mask)

    # (0) safetensors round trip: F32, F16, BF16 (RNE), U8, I32, I64; sharded loading.
    path = os.path.join(tmp, "rt.safetensors")
    x = np.array([1.0, -2.5, 3.14159, 1e-3, 65504.0, 1 + 2 ** -8, 1 + 3 * 2 ** -8], dtype=np.float32)
    arrays = {"f32": x.reshape(7, 1), "f16": x.astype(np.float16), "bf16": x,
              "u8": np.arange(6, dtype=np.uint8).reshape(2, 3), "i32": np.array([-7, 9], np.int32),
              "i64": np.array([[2 ** 40]], np.int64), "scalar": np.array(2.0, np.float32)}
    st.save(path, arrays, metadata={"format": "pt"}, dtypes={"bf16": "BF16"})
    back = st.load(path, keep_dtype=True)
    with open(path, "rb") as f:
        hlen = int.from_bytes(f.read(8), "little")
    # Ties round to even: 1+2^-8 -> 1, 1+3*2^-8 -> 1+2^-6; the same as torch's .to(torch.bfloat16).
    bf16_expected = np.array([1.0, -2.5, 3.140625, 0.00099945068359375, 65536.0, 1.0, 1.015625],
                             dtype=np.float32)
    bf16_torch = torch.from_numpy(x).to(torch.bfloat16).float().numpy()
    ok = (hlen % 8 == 0 and back["bf16"][1] == "BF16" and np.array_equal(back["bf16"][0], bf16_expected)
          and np.array_equal(bf16_torch, bf16_expected)
          and all(np.array_equal(back[k][0], arrays[k]) and back[k][0].dtype == arrays[k].dtype
                  for k in arrays if k != "bf16"))
    sharded = os.path.join(tmp, "tiny_sharded")
    write_model_dir(sharded, TINY, tensors, shards=3)
    _, t2 = load_model_dir(sharded)
    ok = ok and t2.keys() == tensors.keys() and all(np.array_equal(t2[k], tensors[k]) for k in tensors)
    check("safetensors", ok, "round trip of F32/F16/BF16/U8/I32/I64 and a 3-shard checkpoint")

    # (a) LoRA gradients vs central finite differences, float64, rounding replaced by identity.
    lora32 = LoRA.random(cfg, 4, 8, SHORT_NAMES, seed=3, nonzero_b=True)
    model64 = BitNetReference(cfg, tensors, dtype=torch.float64, quantize=False)
    lora64 = lora32.to(torch.float64)
    loss = model64.loss(ids, labels, lora64)
    loss.backward()
    gen = torch.Generator().manual_seed(5)
    worst, fd_all, an_all = 0.0, [], []
    h = 1e-5
    with torch.no_grad():
        for name, p in lora64.named_parameters():
            flat = p.view(-1)
            for j in torch.randperm(flat.numel(), generator=gen)[:6].tolist():
                orig = flat[j].item()
                flat[j] = orig + h
                lp = model64.loss(ids, labels, lora64).item()
                flat[j] = orig - h
                lm = model64.loss(ids, labels, lora64).item()
                flat[j] = orig
                fd, an = (lp - lm) / (2 * h), p.grad.view(-1)[j].item()
                fd_all.append(fd)
                an_all.append(an)
                worst = max(worst, abs(fd - an) / max(abs(an), 1e-4))
    err = rel_norm(fd_all, an_all)
    check("(a) finite differences", err < 1e-6 and worst < 1e-5,
          f"{len(fd_all)} entries over {len(lora64.named_parameters())} tensors, "
          f"||fd-grad||/||grad|| = {err:.2e}, worst entry {worst:.2e}")

    # (b) B = 0: the LoRA model's loss equals the plain model's loss, bit for bit;
    #     grad A = 0 exactly, grad B != 0.
    model = BitNetReference(cfg, tensors)
    lora_zero = LoRA.random(cfg, 4, 8, SHORT_NAMES, seed=3, nonzero_b=False)
    with torch.no_grad():
        plain = model.loss(ids, labels, None).item()
    with_lora = model.loss(ids, labels, lora_zero)
    with_lora.backward()
    a_zero = all(float(p.grad.abs().max()) == 0.0 for n, p in lora_zero.named_parameters() if "lora_A" in n)
    b_nonzero = all(float(p.grad.abs().max()) > 0.0 for n, p in lora_zero.named_parameters() if "lora_B" in n)
    check("(b) B = 0 is the base model", plain == with_lora.item() and a_zero and b_nonzero,
          f"plain {plain!r} vs LoRA {with_lora.item()!r}; grad A all zero: {a_zero}; grad B nonzero: {b_nonzero}")

    # (c) torch.optim.AdamW (and SGD with momentum) vs the formulas of BITNET.md.
    def hand_run(kind, steps, lr, wd, mom=0.0):
        lora = LoRA.random(cfg, 4, 8, SHORT_NAMES, seed=3, nonzero_b=True)
        params = [p for _, p in lora.named_parameters()]
        state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
        b1, b2, eps = 0.9, 0.999, 1e-8
        losses = []
        for t in range(1, steps + 1):
            for p in params:
                p.grad = None
            loss = model.loss(ids, labels, lora)
            loss.backward()
            losses.append(loss.item())
            with torch.no_grad():
                for p, (m, v) in zip(params, state):
                    g = p.grad
                    if kind == "adamw":
                        p.mul_(1 - lr * wd)                       # p <- p (1 - lr wd)
                        m.mul_(b1).add_(g, alpha=1 - b1)          # m <- b1 m + (1-b1) g
                        v.mul_(b2).addcmul_(g, g, value=1 - b2)   # v <- b2 v + (1-b2) g^2
                        denom = v.sqrt() / math.sqrt(1 - b2 ** t) + eps
                        p.addcdiv_(m, denom, value=-(lr / (1 - b1 ** t)))
                    else:
                        m.copy_(g if t == 1 else m * mom + g)     # torch SGD: buf = g, then mom buf + g
                        p.add_(m, alpha=-lr)
        return losses, lora

    for kind, lr, wd, mom in (("adamw", 1e-2, 0.01, 0.0), ("adamw", 3e-3, 0.1, 0.0), ("sgd", 0.1, 0.0, 0.9)):
        ref_lora = LoRA.random(cfg, 4, 8, SHORT_NAMES, seed=3, nonzero_b=True)
        losses, _ = train(model, ref_lora, ids, labels, 4, (kind, lr, wd, mom))
        hand_losses, hand_lora = hand_run(kind, 4, lr, wd, mom)
        perr = max(rel_norm(p.detach(), q.detach())
                   for (_, p), (_, q) in zip(ref_lora.named_parameters(), hand_lora.named_parameters()))
        lerr = max(abs(a - b) / abs(b) for a, b in zip(losses, hand_losses))
        moved = rel_norm(ref_lora.named_parameters()[1][1].detach(),
                         LoRA.random(cfg, 4, 8, SHORT_NAMES, seed=3, nonzero_b=True).named_parameters()[1][1])
        check(f"(c) {kind} lr={lr} wd={wd} momentum={mom}", perr < 1e-6 and lerr < 1e-6 and moved > 1e-3,
              f"4 steps, params rel err {perr:.2e}, loss rel err {lerr:.2e}, "
              f"losses {' '.join(f'{v:.5f}' for v in losses)}")

    # (d) offline packed uint8 + weight_scale == master weights after ternarization.
    packed_tensors = dict(tensors)
    layout_ok = True
    for i in range(cfg.num_hidden_layers):
        for short, module in PROJECTIONS:
            name = f"model.layers.{i}.{module}.weight"
            w = torch.from_numpy(tensors[name])
            s_inv = 1.0 / w.abs().mean().clamp(min=1e-5)
            tern = (w * s_inv).round().clamp(-1, 1).numpy()
            packed = pack_weights(tern)
            # BITNET.md's layout, written out independently: row r + i*(out/4) in bits 2i..2i+1.
            rows = tern.shape[0] // 4
            for r in (0, rows - 1):
                for bit in range(4):
                    code = (packed[r].astype(np.int64) >> (2 * bit)) & 3
                    layout_ok &= np.array_equal(code - 1, tern[r + bit * rows])
            layout_ok &= np.array_equal(unpack_weights(packed), tern)
            packed_tensors[name] = packed
            packed_tensors[name + "_scale"] = np.array([1.0 / s_inv.item()], dtype=np.float32)
    offline_dir = os.path.join(tmp, "tiny_offline")
    write_model_dir(offline_dir, dict(TINY, quantization_config={
        "quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "offline"}),
        packed_tensors)
    offline = BitNetReference(*load_model_dir(offline_dir))
    online = BitNetReference(*load_model_dir(model_dir))
    gen = torch.Generator().manual_seed(9)
    proj_err = 0.0
    with torch.no_grad():
        for short in SHORT_NAMES:
            xin = torch.randn(3, 5, cfg.dims(short)[0], generator=gen)
            proj_err = max(proj_err, rel_norm(offline.bitlinear(1, short, xin), online.bitlinear(1, short, xin)))
    with torch.no_grad():
        lo, ln = offline.forward(ids), online.forward(ids)
    logit_err = float((lo - ln).abs().max() / ln.abs().max())
    check("(d) packed offline == online master", layout_ok and proj_err < 1e-6 and logit_err < 1e-5,
          f"pack layout as BITNET.md: {layout_ok}; projection rel err {proj_err:.2e}; "
          f"max |logit diff| / max |logit| = {logit_err:.2e}")

    # (e) HF's dequantize-then-matmul == BITNET.md's integer form (x_q . W_t^T) * s / a, to float32 rounding.
    w = torch.from_numpy(tensors["model.layers.0.mlp.gate_proj.weight"])
    xin = torch.randn(4, 7, cfg.hidden_size, generator=torch.Generator().manual_seed(11))
    hf_y = F.linear(ActQuant.apply(xin), WeightQuant.apply(w))
    s = w.abs().mean().clamp(min=1e-5)
    wt = (w / s).round().clamp(-1, 1)
    a = 127 / xin.abs().max(dim=-1, keepdim=True).values.clamp(min=1e-5)
    xq = (xin * a).round().clamp(-128, 127)
    int_y = (xq.double() @ wt.double().T) * s.double() / a.double()
    same_tern = bool(torch.equal(wt, (w * (1.0 / s)).round().clamp(-1, 1)))
    err = rel_norm(hf_y, int_y)
    check("(e) HF float form == integer form", err < 1e-6,
          f"rel err {err:.2e}; W/s and W*(1/s) give the same ternary pattern here: {same_tern}")

    # (f) checkpoint variants and the loss's shift/mask semantics.
    with torch.no_grad():
        base_logits = model.forward(ids)
        # BF16 master weights read back == float32 weights rounded to bf16.
        bf16_dir = os.path.join(tmp, "tiny_bf16")
        write_model_dir(bf16_dir, TINY, tensors, dtypes={n: "BF16" for n in tensors})
        rounded = {n: torch.from_numpy(v).to(torch.bfloat16).float().numpy() for n, v in tensors.items()}
        bf16_ok = torch.equal(BitNetReference(*load_model_dir(bf16_dir)).forward(ids),
                              BitNetReference(cfg, rounded).forward(ids))
        # rope_parameters.rope_theta and an explicit head_dim read like the top-level keys.
        conf2 = {k: v for k, v in TINY.items()}
        conf2["rope_parameters"] = {"rope_theta": 500000.0, "rope_type": "default"}
        conf2["head_dim"] = TINY["hidden_size"] // TINY["num_attention_heads"]
        rope_ok = torch.equal(BitNetReference(Config(conf2), tensors).forward(ids), base_logits)
        conf3 = dict(TINY, rope_theta=10000.0)
        rope_used = not torch.equal(BitNetReference(Config(conf3), tensors).forward(ids), base_logits)
        # Untied lm_head is used when tie_word_embeddings is false.
        untied = tiny_tensors(cfg, seed=1, untied=True)
        m_untied = BitNetReference(Config(dict(TINY, tie_word_embeddings=False)), untied)
        m_tied = BitNetReference(cfg, untied)
        untied_ok = (torch.equal(m_untied.lm_head, torch.from_numpy(untied["lm_head.weight"]))
                     and m_tied.lm_head is m_tied.embed)
        # loss == mean over (b, t) with mask[b, t+1] = 1 of -log softmax(logits[b, t])[ids[b, t+1]].
        logp = F.log_softmax(base_logits.double(), dim=-1)
        terms = [-logp[b, t, ids[b, t + 1]] for b in range(ids.shape[0])
                 for t in range(ids.shape[1] - 1) if mask[b, t + 1] == 1]
        manual = float(torch.stack(terms).mean())
        shift_err = abs(model.loss(ids, labels).item() - manual) / manual
    check("(f) checkpoint variants and loss", bf16_ok and rope_ok and rope_used and untied_ok and shift_err < 1e-6,
          f"bf16 weights: {bf16_ok}; rope_parameters/head_dim: {rope_ok}; theta matters: {rope_used}; "
          f"untied lm_head: {untied_ok}; loss vs explicit shifted masked mean ({len(terms)} targets): "
          f"rel err {shift_err:.1e}")

    # (g) the command line end to end: write adapters, run steps, compare outputs.
    here = os.path.dirname(os.path.abspath(__file__))
    me, cmp_script = os.path.abspath(__file__), os.path.join(here, "compare_outputs.py")
    py = sys.executable
    ids_txt, mask_txt = os.path.join(tmp, "ids.txt"), os.path.join(tmp, "mask.txt")
    np.savetxt(ids_txt, ids.numpy(), fmt="%d")
    np.savetxt(mask_txt, mask.numpy(), fmt="%d")
    adapter = os.path.join(tmp, "adapter")

    def run(cmd):
        return subprocess.run([py] + cmd, capture_output=True, text=True)

    r1 = run([me, model_dir, "--write-adapter", adapter, "--lora-rank", "4", "--lora-alpha", "8",
              "--lora-targets", "q,v,down", "--seed", "7", "--nonzero-b"])
    with open(os.path.join(adapter, "adapter_config.json")) as f:
        aconf = json.load(f)
    out1, out2 = os.path.join(tmp, "out1.safetensors"), os.path.join(tmp, "out2.safetensors")
    step = [model_dir, "--tokens", ids_txt, "--mask", mask_txt, "--adapter", adapter,
            "--steps", "3", "--lr", "1e-2"]
    r2 = run([me] + step + ["--out", out1])
    r3 = run([me, sharded] + step[1:] + ["--out", out2])  # sharded copy of the same model
    res = st.load(out1) if r2.returncode == 0 else {}
    names_ok = (set(res) == {"loss"} | {n for n, _ in LoRA.load_peft_dir(adapter, cfg).named_parameters()}
                | {n + ".grad" for n, _ in LoRA.load_peft_dir(adapter, cfg).named_parameters()}
                and res["loss"].shape == (3,))
    same = run([cmp_script, out1, out2])
    perturbed = dict(res)
    key = peft_name(1, "down", "B") + ".grad"
    perturbed[key] = perturbed[key] * (1 + 1e-3)
    out3 = os.path.join(tmp, "out3.safetensors")
    st.save(out3, perturbed)
    diff = run([cmp_script, out3, out1])
    ok = (r1.returncode == 0 and aconf["target_modules"] == ["q_proj", "v_proj", "down_proj"]
          and r2.returncode == 0 and r3.returncode == 0 and names_ok
          and same.returncode == 0 and diff.returncode == 1 and key in diff.stdout)
    if not ok:
        for r in (r1, r2, r3, same, diff):
            sys.stdout.write(r.stdout + r.stderr)
    check("(g) command line", ok,
          f"write-adapter, 3 steps on single-file and sharded checkpoints agree (compare rc {same.returncode}); "
          f"a 1e-3 change to one gradient is caught (compare rc {diff.returncode})")

    failed = results.count(False)
    print(f"self-test: {len(results) - failed} passed, {failed} failed (files in {tmp})")
    if failed == 0:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


# ----------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", nargs="?", help="Hugging Face BitNet checkpoint directory")
    ap.add_argument("--tokens", help="token ids, one sequence per line")
    ap.add_argument("--mask", help="0/1 per token, same shape; 0 = that label is not a target")
    ap.add_argument("--adapter", help="PEFT adapter directory to start from (overrides --lora-*)")
    ap.add_argument("--lora-rank", type=int)
    ap.add_argument("--lora-alpha", type=float)
    ap.add_argument("--lora-targets", help="q,k,v,o,gate,up,down | attn | ffn | all")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=None,
                    help="default 0.01 for adamw, 0 for sgd")
    ap.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    ap.add_argument("--momentum", type=float, default=0.0)
    ap.add_argument("--out", help="output .safetensors")
    ap.add_argument("--write-adapter", metavar="DIR", help="write a PEFT adapter directory and exit")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nonzero-b", action="store_true", help="init B ~ N(0, 0.02^2) instead of 0")
    ap.add_argument("--self-test", action="store_true", help="run the built-in checks and exit")
    ap.add_argument("--no-quant", action="store_true", help=argparse.SUPPRESS)  # debug: rounding -> identity
    args = ap.parse_args(argv)

    torch.use_deterministic_algorithms(True)
    if args.self_test:
        return run_self_test()
    if not args.model_dir:
        ap.error("MODEL_DIR is required")
    if args.lora_alpha is not None and float(args.lora_alpha).is_integer():
        args.lora_alpha = int(args.lora_alpha)  # PEFT configs hold an int alpha
    if args.write_adapter:
        return run_write_adapter(args)
    if not args.tokens or not args.out:
        ap.error("--tokens and --out are required")
    if args.steps < 1:
        ap.error("--steps must be >= 1")
    return run_step(args)


if __name__ == "__main__":
    sys.exit(main())
