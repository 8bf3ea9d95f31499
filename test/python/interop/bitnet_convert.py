#!/usr/bin/python3
"""llama.cpp's convert_hf_to_gguf.py, BitnetModel path, re-implemented for tests.

    bitnet_convert.py MODEL_DIR --outtype f32|f16|tq1_0|tq2_0 --outfile OUT.gguf

Writes a GGUF the way llama.cpp's converter writes one for a BitNet b1.58
checkpoint, with the vendored gguf-py (test/third_party/gguf-py) GGUFWriter and
quantizers. It needs numpy and torch (the converter's own tensor maths runs in
torch: weight_quant's mean/round/clamp are done by torch here too, so that the
float32 scale is the same bits llama.cpp's converter would produce). No
transformers, sentencepiece or gguf package is needed.

Reference (read from the public llama.cpp source index; every "[ref ...]" below
names the upstream function and quotes the line(s) followed):

  C  = ggml-org/llama.cpp convert_hf_to_gguf.py @ 0024aa7417efd50a7c2a79e049dfbbbceb0beaaf
       (ModelBase.prepare_tensors, ModelBase.dequant_model, ModelBase.modify_tensors,
        TextModel.__init__, TextModel.set_gguf_parameters, TextModel.get_vocab_base,
        TextModel.get_vocab_base_pre, TextModel._set_vocab_gpt2, class BitnetModel)
  V  = ggml-org/llama.cpp gguf-py/gguf/vocab.py @ 0c1c9d33a805aad92c28cc15213a0dc5867f8818
       (SpecialVocab)
  W  = ggml-org/llama.cpp gguf-py/gguf/gguf_writer.py @ 0024aa74 (add_* key names and types)
  T  = ggml-org/llama.cpp gguf-py/gguf/tensor_mapping.py @ 0024aa74 (TensorNameMap)
  K  = ggml-org/llama.cpp gguf-py/gguf/constants.py (MODEL_ARCH.BITNET tensor list,
       LlamaFileType)
  L  = ggml-org/llama.cpp src/models/bitnet.cpp (llama_model_bitnet::load_arch_tensors)

Where upstream, run as is, would refuse this repository's checkpoints, the
adaptation is named in UPSTREAM_GAPS below and done explicitly (never silently):

  1. C registers BitnetModel for "BitnetForCausalLM" only (1bitLLM spelling);
     transformers' checkpoints say "BitNetForCausalLM".
  2. C BitnetModel.set_vocab is `self._set_vocab_sentencepiece()`, which needs
     tokenizer.model; these checkpoints ship only tokenizer.json (a GPT-2 style
     byte-level BPE), so the vocab is written by TextModel._set_vocab_gpt2 (the
     base-class default, and what forks that register "BitNetForCausalLM" do).
  3. C get_vocab_base_pre hashes AutoTokenizer.encode(chktxt); a toy tokenizer's
     hash is in no list (upstream raises "BPE pre-tokenizer was not
     recognized"). The pre-tokenizer here is checked to be Llama 3's split
     regex + ByteLevel(use_regex=false), which upstream names "llama-bpe".
  4. T maps ATTN_SUB_NORM / FFN_SUB_NORM only from the 1bitLLM names
     "self_attn.inner_attn_ln" / "mlp.ffn_layernorm"; transformers' BitNet uses
     "self_attn.attn_sub_norm" / "mlp.ffn_sub_norm". Those are added as aliases
     of the same GGUF tensors.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "third_party", "gguf-py"))
sys.path.insert(0, os.path.join(HERE, ".."))

import gguf  # noqa: E402  (vendored, trimmed gguf-py)
from gguf import GGMLQuantizationType as QT  # noqa: E402
import safetensors_io  # noqa: E402

UPSTREAM_GAPS = [
    "architecture 'BitNetForCausalLM' is not registered upstream (only 'BitnetForCausalLM')",
    "upstream BitnetModel.set_vocab needs tokenizer.model (sentencepiece); vocab written by "
    "TextModel._set_vocab_gpt2 instead",
    "upstream get_vocab_base_pre would not recognise this tokenizer's chkhsh; "
    "tokenizer.ggml.pre = 'llama-bpe' chosen after checking the split regex is Llama 3's",
    "upstream TensorNameMap has no 'self_attn.attn_sub_norm' / 'mlp.ffn_sub_norm' "
    "(only 'inner_attn_ln' / 'ffn_layernorm'); mapped as aliases",
]

# [ref K] class LlamaFileType: ALL_F32 = 0, MOSTLY_F16 = 1, MOSTLY_TQ1_0 = 36,
# MOSTLY_TQ2_0 = 37 (llama.h LLAMA_FTYPE_*); main()'s ftype_map maps --outtype.
FTYPES = {"f32": 0, "f16": 1, "tq1_0": 36, "tq2_0": 37}
FTYPE_NAMES = {0: "ALL_F32", 1: "MOSTLY_F16", 36: "MOSTLY_TQ1_0", 37: "MOSTLY_TQ2_0"}

ARCH = "bitnet"  # [ref K] MODEL_ARCH_NAMES[MODEL_ARCH.BITNET] = "bitnet"
GGUF_TYPE_MODEL = "model"  # [ref K] GGUFType.MODEL, written by ModelBase.set_type

# [ref K] MODEL_TENSORS[MODEL_ARCH.BITNET] = [ATTN_Q, ATTN_K, ATTN_V, TOKEN_EMBD,
# OUTPUT_NORM, ATTN_NORM, ATTN_OUT, FFN_NORM, FFN_GATE, FFN_DOWN, FFN_UP,
# ATTN_SUB_NORM, FFN_SUB_NORM] with TENSOR_NAMES below (no OUTPUT: the head is
# always tied to token_embd, [ref L] "build_lora_mm(model.tok_embd, cur)").
TENSOR_NAMES = {
    "TOKEN_EMBD": "token_embd",
    "OUTPUT_NORM": "output_norm",
    "ATTN_NORM": "blk.{bid}.attn_norm",
    "ATTN_Q": "blk.{bid}.attn_q",
    "ATTN_K": "blk.{bid}.attn_k",
    "ATTN_V": "blk.{bid}.attn_v",
    "ATTN_OUT": "blk.{bid}.attn_output",
    "FFN_NORM": "blk.{bid}.ffn_norm",
    "FFN_GATE": "blk.{bid}.ffn_gate",
    "FFN_DOWN": "blk.{bid}.ffn_down",
    "FFN_UP": "blk.{bid}.ffn_up",
    "ATTN_SUB_NORM": "blk.{bid}.attn_sub_norm",
    "FFN_SUB_NORM": "blk.{bid}.ffn_sub_norm",
}

# [ref T] TensorNameMap.mappings_cfg / block_mappings_cfg, the HF-style entries
# of the bitnet tensors ("model.embed_tokens" # llama-hf, "model.norm",
# "model.layers.{bid}.input_layernorm", "...self_attn.q_proj", ...,
# "model.layers.{bid}.post_attention_layernorm" -> FFN_NORM,
# ATTN_SUB_NORM: ("model.layers.{bid}.self_attn.inner_attn_ln",  # bitnet),
# FFN_SUB_NORM: ("model.layers.{bid}.mlp.ffn_layernorm",  # bitnet)).
TENSOR_MAP = {
    "TOKEN_EMBD": ["model.embed_tokens"],
    "OUTPUT_NORM": ["model.norm"],
    "ATTN_NORM": ["model.layers.{bid}.input_layernorm"],
    "ATTN_Q": ["model.layers.{bid}.self_attn.q_proj"],
    "ATTN_K": ["model.layers.{bid}.self_attn.k_proj"],
    "ATTN_V": ["model.layers.{bid}.self_attn.v_proj"],
    "ATTN_OUT": ["model.layers.{bid}.self_attn.o_proj"],
    "FFN_NORM": ["model.layers.{bid}.post_attention_layernorm"],
    "FFN_GATE": ["model.layers.{bid}.mlp.gate_proj"],
    "FFN_DOWN": ["model.layers.{bid}.mlp.down_proj"],
    "FFN_UP": ["model.layers.{bid}.mlp.up_proj"],
    "ATTN_SUB_NORM": ["model.layers.{bid}.self_attn.inner_attn_ln"],
    "FFN_SUB_NORM": ["model.layers.{bid}.mlp.ffn_layernorm"],
}
# UPSTREAM_GAPS[3]: transformers' BitNet names for the same two tensors.
COMPAT_ALIASES = {
    "ATTN_SUB_NORM": ["model.layers.{bid}.self_attn.attn_sub_norm"],
    "FFN_SUB_NORM": ["model.layers.{bid}.mlp.ffn_sub_norm"],
}

# [ref C] BitnetModel.modify_tensors: the tensors that get weight_quant.
TERNARY_KEYS = ("ATTN_Q", "ATTN_K", "ATTN_V", "ATTN_OUT", "FFN_UP", "FFN_DOWN", "FFN_GATE")

# Llama 3's tokenizer.json pre_tokenizer Split regex (meta-llama/Meta-Llama-3-8B,
# which convert_hf_to_gguf_update.py registers as res = "llama-bpe").
LLAMA3_SPLIT_REGEX = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)


class ConvertError(Exception):
    pass


# ---------------------------------------------------------------------------
# tensor names
# ---------------------------------------------------------------------------

def build_tensor_map(block_count, compat=True):
    """HF base name (no .weight/.bias) -> (MODEL_TENSOR key, bid, GGUF base name).

    [ref T] TensorNameMap.__init__ formats every "{bid}" entry for
    bid in range(n_blocks), only for the keys of MODEL_TENSORS[arch]."""
    out = {}
    for table in (TENSOR_MAP, COMPAT_ALIASES if compat else {}):
        for key, hf_names in table.items():
            for hf in hf_names:
                if "{bid}" in hf:
                    for bid in range(block_count):
                        out[hf.format(bid=bid)] = (key, bid, TENSOR_NAMES[key].format(bid=bid))
                else:
                    out[hf] = (key, None, TENSOR_NAMES[key])
    return out


def map_tensor_name(tmap, name, try_suffixes=(".weight", ".bias")):
    """[ref C] ModelBase.map_tensor_name -> TensorNameMap.get_name(key=name,
    try_suffixes=(".weight", ".bias")); raises "Can not map tensor" if None."""
    if name in tmap:
        return tmap[name]
    for suffix in try_suffixes:
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            if base in tmap:
                key, bid, gname = tmap[base]
                return key, bid, gname + suffix
    raise ConvertError(f"Can not map tensor {name!r}")


# ---------------------------------------------------------------------------
# the converter
# ---------------------------------------------------------------------------

class BitnetConverter:
    def __init__(self, dir_model, outtype, compat=True):
        self.dir_model = dir_model
        if outtype not in FTYPES:
            raise ConvertError(f"unsupported --outtype {outtype!r}")
        self.ftype = FTYPES[outtype]
        self.compat = compat
        self.gaps_used = []
        # [ref C] ModelBase.load_hparams: AutoConfig(...).to_dict(), and on any
        # failure "Trying to load config.json instead" -> json.load(config.json).
        # transformers is not available here, so this is the fallback path.
        with open(os.path.join(dir_model, "config.json"), encoding="utf-8") as f:
            self.hparams = json.load(f)
        arch = (self.hparams.get("architectures") or ["?"])[0]
        # [ref C] @ModelBase.register("BitnetForCausalLM") class BitnetModel
        if arch != "BitnetForCausalLM":
            if not (compat and arch == "BitNetForCausalLM"):
                raise ConvertError(f"Architecture {arch!r} not supported!")
            self.gaps_used.append(UPSTREAM_GAPS[0])
        # [ref C] TextModel.__init__:
        #   self.block_count = self.find_hparam(["n_layers", "num_hidden_layers", "n_layer", "num_layers"])
        self.block_count = self.find_hparam(["n_layers", "num_hidden_layers", "n_layer", "num_layers"])
        self.tmap = build_tensor_map(self.block_count, compat=compat)
        #   self.rope_parameters = self.hparams.get("rope_parameters", self.hparams.get("rope_scaling")) or {}
        self.rope_parameters = dict(self.hparams.get("rope_parameters", self.hparams.get("rope_scaling")) or {})
        rope_theta = self.find_hparam(["global_rope_theta", "rope_global_theta", "rope_theta_global",
                                       "rope_theta", "rotary_emb_base"], optional=True)
        local_rope_theta = self.find_hparam(["local_rope_theta", "rope_local_theta", "rope_theta_local",
                                             "swa_rope_theta", "rope_local_base_freq"], optional=True)
        if "full_attention" not in self.rope_parameters and "sliding_attention" not in self.rope_parameters:
            if local_rope_theta is not None:
                self.rope_parameters["sliding_attention"] = {"rope_theta": local_rope_theta}
            if "rope_theta" not in self.rope_parameters and rope_theta is not None:
                self.rope_parameters["rope_theta"] = rope_theta
            if "rope_type" not in self.rope_parameters and (rt := self.rope_parameters.get("type")) is not None:
                self.rope_parameters["rope_type"] = rt
        self.writer = gguf.GGUFWriter(path=None, arch=ARCH)
        self.tensor_log = []  # (hf name, gguf name, GGML type, logical shape [out, in])

    def find_hparam(self, keys, optional=False):
        # [ref C] ModelBase.find_hparam
        key = next((k for k in keys if k in self.hparams), None)
        if key is not None:
            return self.hparams[key]
        if optional:
            return None
        raise KeyError(f"could not find any of: {keys}")

    # -- tensors ------------------------------------------------------------

    def index_tensors(self):
        """[ref C] ModelBase.index_tensors: parts "model*.safetensors" (sorted),
        or the parts named by model.safetensors.index.json; names in each
        part's header order. BF16 widens to float32 exactly (safetensors_io)."""
        index = os.path.join(self.dir_model, "model.safetensors.index.json")
        if os.path.isfile(index):
            with open(index, encoding="utf-8") as f:
                parts = sorted(dict.fromkeys(json.load(f)["weight_map"].values()))
        else:
            parts = sorted(p for p in os.listdir(self.dir_model)
                           if p.startswith("model") and p.endswith(".safetensors"))
        tensors = {}
        for part in parts:
            for name, arr in safetensors_io.load(os.path.join(self.dir_model, part)).items():
                tensors[name] = arr
        return tensors

    def dequant_model(self, tensors):
        """[ref C] ModelBase.dequant_model, the quant_method == "bitnet" branch:
            if name.endswith(".weight_scale"): weight_name = name.removesuffix("_scale")
                ... self.model_tensors[weight_name] = dequant_bitnet(w(), s())
        with dequant_bitnet:
            shift = [0, 2, 4, 6] ...; data = weight.unsqueeze(0).expand((4, *orig_shape)) >> shift
            data = data & 3
            data = (data.float() - 1).reshape((orig_shape[0] * 4, *orig_shape[1:]))
            # The scale is inverted
            return data / scale.float()
        (A no-op for master-weight checkpoints, which have no .weight_scale.)"""
        qc = self.hparams.get("quantization_config")
        if not (isinstance(qc, dict) and qc.get("quant_method") == "bitnet"):
            return tensors
        for name in [n for n in tensors if n.endswith(".weight_scale")]:
            wname = name[: -len("_scale")]
            w = torch.from_numpy(np.ascontiguousarray(tensors[wname])).view(torch.uint8)
            orig = w.shape
            shift = torch.tensor([0, 2, 4, 6], dtype=torch.uint8).reshape((4, *(1 for _ in orig)))
            data = w.unsqueeze(0).expand((4, *orig)) >> shift
            data = data & 3
            data = (data.float() - 1).reshape((orig[0] * 4, *orig[1:]))
            tensors[wname] = (data / torch.from_numpy(np.asarray(tensors[name])).float()).numpy()
            del tensors[name]
        return tensors

    @staticmethod
    def weight_quant(weight):
        """[ref C] BitnetModel.weight_quant, verbatim:
            dtype = weight.dtype
            weight = weight.float()
            scale = weight.abs().mean().clamp(min=1e-5)
            iscale = 1 / scale
            result = (weight * iscale).round().clamp(-1, 1) / iscale
            return result.type(dtype)"""
        dtype = weight.dtype
        weight = weight.float()
        scale = weight.abs().mean().clamp(min=1e-5)
        iscale = 1 / scale
        result = (weight * iscale).round().clamp(-1, 1) / iscale
        return result.type(dtype)

    def modify_tensors(self, data_torch, name, bid):
        """[ref C] BitnetModel.modify_tensors:
            new_name = self.map_tensor_name(name)
            if any(self.match_model_tensor_name(new_name, key, bid) for key in [
                ATTN_Q, ATTN_K, ATTN_V, ATTN_OUT, FFN_UP, FFN_DOWN, FFN_GATE]):
                # transform weight into 1/0/-1 (in fp32)
                data_torch = self.weight_quant(data_torch)
            yield from super().modify_tensors(data_torch, name, bid)
        (ModelBase.modify_tensors maps the name again and yields it unchanged.)"""
        key, tbid, new_name = map_tensor_name(self.tmap, name)
        if name.split(".")[-2] in ("attn_sub_norm", "ffn_sub_norm") and UPSTREAM_GAPS[3] not in self.gaps_used:
            self.gaps_used.append(UPSTREAM_GAPS[3])
        # match_model_tensor_name(new_name, key, bid): name == TENSOR_NAMES[key].format(bid) + ".weight"
        if key in TERNARY_KEYS and tbid == bid and new_name.endswith(".weight"):
            data_torch = self.weight_quant(data_torch)
        yield new_name, key, data_torch

    def tensor_qtype(self, new_name, key, n_dims):
        """[ref C] ModelBase.prepare_tensors' type choice, the branches that can
        apply to arch bitnet (tensor_force_quant is the base `return False`):
            if n_dims <= 1 or new_name.endswith("_norm.weight"): data_qtype = F32
            if data_qtype is False and (... or new_name[-7:] not in (".weight", ".lora_a", ".lora_b")): F32
            if data_qtype is False and any(match(new_name, TOKEN_EMBD | OUTPUT | ...)):
                if self.ftype in (MOSTLY_TQ1_0, MOSTLY_TQ2_0):
                    # TODO: use Q4_K and Q6_K
                    data_qtype = F16
            if isinstance(data_qtype, bool):
                ALL_F32 -> F32, MOSTLY_F16 -> F16, MOSTLY_TQ1_0 -> TQ1_0, MOSTLY_TQ2_0 -> TQ2_0"""
        qtype = False
        if n_dims <= 1 or new_name.endswith("_norm.weight"):
            qtype = QT.F32
        if qtype is False and new_name[-7:] not in (".weight", ".lora_a", ".lora_b"):
            qtype = QT.F32
        if qtype is False and key == "TOKEN_EMBD" and self.ftype in (36, 37):
            qtype = QT.F16
        if qtype is False:
            qtype = {0: QT.F32, 1: QT.F16, 36: QT.TQ1_0, 37: QT.TQ2_0}[self.ftype]
        return qtype

    def prepare_tensors(self):
        """[ref C] ModelBase.prepare_tensors."""
        tensors = self.dequant_model(self.index_tensors())
        for name, arr in tensors.items():
            # "we don't need these"
            if name.endswith((".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")):
                continue
            data_torch = torch.from_numpy(np.ascontiguousarray(arr))
            # "convert any unsupported data types to float32"
            if data_torch.dtype not in (torch.float16, torch.float32):
                data_torch = data_torch.to(torch.float32)
            # "use the first number-like part of the tensor name as the block id"
            bid = None
            for part in name.split("."):
                if part.isdecimal():
                    bid = int(part)
                    break
            for new_name, key, data_torch in self.modify_tensors(data_torch, name, bid):
                data = data_torch.numpy()
                n_dims = len(data.shape)
                data_qtype = self.tensor_qtype(new_name, key, n_dims)
                try:
                    data = gguf.quants.quantize(data, data_qtype)
                except gguf.QuantError:
                    # "falling back to F16"
                    data_qtype = QT.F16
                    data = gguf.quants.quantize(data, data_qtype)
                shape = (gguf.quant_shape_from_byte_shape(data.shape, data_qtype)
                         if data.dtype == np.uint8 else data.shape)
                self.writer.add_tensor(new_name, data, raw_dtype=data_qtype)
                self.tensor_log.append((name, new_name, data_qtype, tuple(int(d) for d in shape)))

    # -- metadata -----------------------------------------------------------

    def set_gguf_parameters(self):
        """[ref C] TextModel.set_gguf_parameters then BitnetModel's additions.
        Key names and value types from [ref W]:
          add_block_count        -> uint32  {arch}.block_count
          add_context_length     -> uint32  {arch}.context_length
          add_embedding_length   -> uint32  {arch}.embedding_length
          add_feed_forward_length-> uint32  {arch}.feed_forward_length
          add_head_count         -> uint32  {arch}.attention.head_count
          add_head_count_kv      -> uint32  {arch}.attention.head_count_kv
          add_rope_freq_base     -> float32 {arch}.rope.freq_base
          add_layer_norm_rms_eps -> float32 {arch}.attention.layer_norm_rms_epsilon
          add_key_length/value_length -> uint32 {arch}.attention.key_length / value_length
          add_file_type          -> uint32  general.file_type
          add_rope_scaling_type  -> string  {arch}.rope.scaling.type (RopeScalingType.value)
          add_rope_scaling_factor-> float32 {arch}.rope.scaling.factor"""
        w, a = self.writer, ARCH
        w.add_uint32(f"{a}.block_count", self.block_count)
        if (n_ctx := self.find_hparam(["max_position_embeddings", "n_ctx", "n_positions", "max_length",
                                       "max_sequence_length", "model_max_length"], optional=True)) is not None:
            w.add_uint32(f"{a}.context_length", n_ctx)
        if (n_embd := self.find_hparam(["hidden_size", "n_embd", "dim"], optional=True)) is not None:
            w.add_uint32(f"{a}.embedding_length", n_embd)
        if (n_ff := self.find_hparam(["intermediate_size", "n_inner", "hidden_dim"], optional=True)) is not None:
            w.add_uint32(f"{a}.feed_forward_length", n_ff)
        if (n_head := self.find_hparam(["num_attention_heads", "n_head", "n_heads"], optional=True)) is not None:
            w.add_uint32(f"{a}.attention.head_count", n_head)
        if (n_head_kv := self.find_hparam(["num_key_value_heads", "n_kv_heads"], optional=True)) is not None:
            w.add_uint32(f"{a}.attention.head_count_kv", n_head_kv)
        if self.hparams.get("is_causal") is False:
            w.add_bool(f"{a}.attention.causal", False)
        rope_params = self.rope_parameters.get("full_attention", self.rope_parameters)
        if (rope_type := rope_params.get("rope_type")) is not None:
            factor = rope_params.get("factor")
            if rope_type == "linear" and factor is not None:
                w.add_string(f"{a}.rope.scaling.type", "linear")
                w.add_float32(f"{a}.rope.scaling.factor", factor)
            elif rope_type not in ("default",):
                # yarn / longrope / llama3 / dynamic: not BitNet b1.58 configurations
                raise ConvertError(f"RoPE type {rope_type!r} is outside this re-implementation")
        if (rope_theta := rope_params.get("rope_theta")) is not None:
            w.add_float32(f"{a}.rope.freq_base", rope_theta)
        if (f_rms_eps := self.find_hparam(["rms_norm_eps", "norm_eps"], optional=True)) is not None:
            w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", f_rms_eps)
        if (f_norm_eps := self.find_hparam(["layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"],
                                           optional=True)) is not None:
            w.add_float32(f"{a}.attention.layer_norm_epsilon", f_norm_eps)
        # (expert / MoE keys: never present in a BitNet config)
        if (head_dim := self.hparams.get("head_dim")) is not None:
            w.add_uint32(f"{a}.attention.key_length", head_dim)
            w.add_uint32(f"{a}.attention.value_length", head_dim)
        w.add_file_type(self.ftype)
        # BitnetModel.set_gguf_parameters:
        #   self.gguf_writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        #   self.gguf_writer.add_rope_scaling_factor(1.0)
        w.add_string(f"{a}.rope.scaling.type", gguf.RopeScalingType.LINEAR.value)
        w.add_float32(f"{a}.rope.scaling.factor", 1.0)

    def get_vocab_base(self):
        """[ref C] TextModel.get_vocab_base, with AutoTokenizer replaced by a
        direct read of tokenizer.json / tokenizer_config.json (a fast
        tokenizer's vocab is model.vocab plus added_tokens):
            for i in range(vocab_size):
                if i not in reverse_vocab: tokens.append(f"[PAD{i}]"); UNUSED
                elif token in added_vocab:
                    (non-normalized: token = decode(encode(token)) -- identity for these)
                    if added_tokens_decoder[i].special or does_token_look_special(token): CONTROL
                    else: token = token.replace("\u2581", " "); USER_DEFINED
                else: NORMAL"""
        with open(os.path.join(self.dir_model, "tokenizer.json"), encoding="utf-8") as f:
            tj = json.load(f)
        model = tj["model"]
        # gguf BpeVocab's check for a GPT-2 byte-level BPE ([ref V] BpeVocab.__init__)
        if model.get("type") != "BPE" or model.get("byte_fallback", False) or \
                (tj.get("decoder") or {}).get("type") != "ByteLevel":
            raise ConvertError("Cannot find GPT-2 BPE tokenizer")
        vocab = dict(model["vocab"])
        added = {t["content"]: t for t in tj.get("added_tokens", [])}
        for content, t in added.items():
            vocab[content] = t["id"]
        vocab_size = self.hparams.get("vocab_size", len(vocab))
        assert max(vocab.values()) < vocab_size
        tokpre = self.get_vocab_base_pre(tj)
        reverse = {i: t for t, i in vocab.items()}
        tokens, toktypes = [], []
        for i in range(vocab_size):
            if i not in reverse:
                tokens.append(f"[PAD{i}]")
                toktypes.append(gguf.TokenType.UNUSED)
                continue
            token = reverse[i]
            if token in added:
                if added[token].get("special") or self.does_token_look_special(token):
                    toktypes.append(gguf.TokenType.CONTROL)
                else:
                    token = token.replace(b"\xe2\x96\x81".decode("utf-8"), " ")
                    toktypes.append(gguf.TokenType.USER_DEFINED)
            else:
                toktypes.append(gguf.TokenType.NORMAL)
            tokens.append(token)
        return tokens, toktypes, tokpre

    @staticmethod
    def does_token_look_special(token):
        # [ref C] TextModel.does_token_look_special
        s = token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        s = s or (token.startswith("<|") and token.endswith("|>"))
        s = s or (token.startswith("<\uff5c") and token.endswith("\uff5c>"))
        s = s or (token.startswith("<unused") and token.endswith(">"))
        return s

    def get_vocab_base_pre(self, tj):
        """UPSTREAM_GAPS[2]: [ref C] get_vocab_base_pre identifies the
        pre-tokenizer by sha256(str(tokenizer.encode(chktxt))) against a table
        (Meta-Llama-3-8B -> "llama-bpe") and raises NotImplementedError("BPE
        pre-tokenizer was not recognized") otherwise. Without transformers the
        hash cannot be computed; the pre-tokenizer is compared to Llama 3's."""
        pre = tj.get("pre_tokenizer") or {}
        seq = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
        split = [p for p in seq if p.get("type") == "Split"]
        blevel = [p for p in seq if p.get("type") == "ByteLevel"]
        if len(split) == 1 and split[0].get("pattern", {}).get("Regex") == LLAMA3_SPLIT_REGEX and \
                split[0].get("behavior") == "Isolated" and len(blevel) == 1 and \
                blevel[0].get("use_regex") is False:
            self.gaps_used.append(UPSTREAM_GAPS[2])
            return "llama-bpe"
        raise ConvertError("BPE pre-tokenizer was not recognized - update get_vocab_base_pre()")

    def special_vocab(self, n_vocab=None):
        """[ref V] SpecialVocab(dir_model, load_merges=True): merges from
        tokenizer.json (list-of-pairs form joined with ' ', spaces inside a part
        encoded as chr(ord(' ') + 256)); bos/eos/... ids by content from
        tokenizer_config.json's *_token looked up in tokenizer.json's
        added_tokens, then config.json's *_token_id (first setting wins);
        add_*_token from TemplateProcessing and tokenizer_config; chat_template."""
        d = self.dir_model
        special_types = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
        ids, add, merges, chat_template = {}, {}, [], None

        def set_special(typ, tid):
            if not isinstance(tid, int) or isinstance(tid, bool):
                return
            if tid < 0:
                raise ValueError(f"invalid value for special token type {typ}: {tid}")
            if n_vocab is None or tid < n_vocab:
                ids.setdefault(typ, tid)

        with open(os.path.join(d, "tokenizer.json"), encoding="utf-8") as f:
            tok = json.load(f)
        m = tok.get("model", {}).get("merges")
        if isinstance(m, list) and m:
            if isinstance(m[0], str):
                merges = m
            elif isinstance(m[0], list) and len(m[0]) == 2 and isinstance(m[0][0], str):
                merges = [" ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part)
                                   for part in pair) for pair in m]
            else:
                raise ValueError("Unknown tokenizer merges format")
        added_tokens = tok.get("added_tokens", {})
        tc = None
        tc_path = os.path.join(d, "tokenizer_config.json")
        if os.path.isfile(tc_path):
            with open(tc_path, encoding="utf-8") as f:
                tc = json.load(f)
        sbos, seos = (tc or {}).get("bos_token"), (tc or {}).get("eos_token")
        scls, ssep = (tc or {}).get("cls_token"), (tc or {}).get("sep_token")
        if not sbos and scls and tc:
            tc["bos_token"] = sbos = scls
        if not seos and ssep and tc:
            tc["eos_token"] = seos = ssep
        if pp := tok.get("post_processor"):
            for proc in pp.get("processors", [pp]):
                if proc.get("type") == "RobertaProcessing":
                    raise ConvertError("RobertaProcessing is outside this re-implementation")
                if proc.get("type") != "TemplateProcessing":
                    continue
                single, pair = proc.get("single", []), proc.get("pair", [])
                first = last = None
                if len(single) > 1:
                    if first := single[0].get("SpecialToken", {}).get("id"):
                        if not tc:
                            sbos = first
                        add["bos"] = first in (sbos, scls)
                    if last := single[-1].get("SpecialToken", {}).get("id"):
                        if not tc:
                            seos = last
                        elif last != seos:
                            raise ConvertError("EOT/EOM re-labelling is outside this re-implementation")
                        add["eos"] = last == seos
                if pair:
                    start = 1 if first and pair[0].get("SpecialToken", {}).get("id") == first else 0
                    stop = -1 if last and pair[-1].get("SpecialToken", {}).get("id") == last else None
                    if pair := pair[slice(start, stop)]:
                        a = pair[0].get("Sequence", {}).get("id")
                        b = pair[-1].get("Sequence", {}).get("id")
                        if a == "A" and b == "B" and (mid := pair[1:-1]):
                            add_sep = False
                            if entry := mid[0].get("SpecialToken", {}).get("id"):
                                if entry in (ssep, seos) and not last:
                                    add_sep = True
                            if len(mid) == 2:
                                if entry := mid[1].get("SpecialToken", {}).get("id"):
                                    if entry in (ssep, seos):
                                        add_sep = True
                            add["sep"] = add_sep
        if tc:
            chat_template = tc.get("chat_template")
            for typ in special_types:
                entry = tc.get(f"add_{typ}_token")
                if isinstance(entry, bool):
                    add[typ] = entry
                entry = tc.get(f"{typ}_token")
                if isinstance(entry, dict):
                    entry = entry.get("content")
                if not isinstance(entry, str):
                    continue
                set_special(typ, next((t.get("id") for t in added_tokens if t.get("content") == entry), None))
        cfg_path = os.path.join(d, "config.json")
        if os.path.isfile(cfg_path):
            with open(cfg_path, encoding="utf-8") as f:
                cfg = json.load(f)
            for typ in special_types:
                set_special(typ, cfg.get(f"{typ}_token_id"))
        return merges, ids, add, chat_template

    def set_vocab(self):
        """UPSTREAM_GAPS[1]: [ref C] TextModel._set_vocab_gpt2:
            tokens, toktypes, tokpre = self.get_vocab_base()
            self.gguf_writer.add_tokenizer_model("gpt2")
            self.gguf_writer.add_tokenizer_pre(tokpre)
            self.gguf_writer.add_token_list(tokens)
            self.gguf_writer.add_token_types(toktypes)
            special_vocab = gguf.SpecialVocab(self.dir_model, load_merges=True)
            special_vocab.add_to_gguf(self.gguf_writer)
        [ref W] keys: tokenizer.ggml.model / .pre (string), .tokens (string[]),
        .token_type (int32[]), .merges (string[]), .<typ>_token_id (uint32),
        .add_<typ>_token (bool), tokenizer.chat_template (string)."""
        if os.path.isfile(os.path.join(self.dir_model, "tokenizer.model")):
            raise ConvertError("tokenizer.model present: upstream's sentencepiece path applies")
        self.gaps_used.append(UPSTREAM_GAPS[1])
        w = self.writer
        tokens, toktypes, tokpre = self.get_vocab_base()
        w.add_string("tokenizer.ggml.model", "gpt2")
        w.add_string("tokenizer.ggml.pre", tokpre)
        w.add_array("tokenizer.ggml.tokens", tokens)
        w.add_array("tokenizer.ggml.token_type", [int(t) for t in toktypes])
        merges, ids, add, chat_template = self.special_vocab()
        if merges:
            w.add_array("tokenizer.ggml.merges", merges)
        for typ, tid in ids.items():
            w.add_uint32(f"tokenizer.ggml.{typ}_token_id", tid)
        for typ, value in add.items():
            w.add_bool(f"tokenizer.ggml.add_{typ}_token", value)
        if chat_template is not None:
            if not isinstance(chat_template, str):
                raise ConvertError("named chat templates are outside this re-implementation")
            w.add_string("tokenizer.chat_template", chat_template)

    def prepare_metadata(self):
        """[ref C] ModelBase.prepare_metadata + TextModel.prepare_metadata:
        set_type(); metadata.set_gguf_meta_model(); set_gguf_parameters();
        add_quantization_version(GGML_QUANT_VERSION); then set_vocab().
        gguf.Metadata's model-card heuristics are reduced to general.name =
        the model directory's name (its documented fallback)."""
        self.writer.add_type(GGUF_TYPE_MODEL)
        self.writer.add_name(os.path.basename(os.path.normpath(self.dir_model)))
        self.set_gguf_parameters()
        self.writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        self.set_vocab()

    def write(self, fname_out):
        """[ref C] ModelBase.write: prepare_tensors(); prepare_metadata();
        write_header_to_file(path); write_kv_data_to_file();
        write_tensors_to_file(progress=True); close()."""
        self.prepare_tensors()
        self.prepare_metadata()
        self.writer.write_header_to_file(path=fname_out)
        self.writer.write_kv_data_to_file()
        self.writer.write_tensors_to_file(progress=False)
        self.writer.close()
        return self.tensor_log


def convert(dir_model, outtype, fname_out, compat=True):
    """Returns (tensor_log, gaps_used)."""
    c = BitnetConverter(dir_model, outtype, compat=compat)
    log = c.write(fname_out)
    return log, c.gaps_used


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--outtype", choices=sorted(FTYPES), default="f16")
    ap.add_argument("--outfile", required=True)
    ap.add_argument("--strict-upstream", action="store_true",
                    help="refuse where upstream convert_hf_to_gguf.py would (no compat aliases)")
    args = ap.parse_args(argv)
    log, gaps = convert(args.model, args.outtype, args.outfile, compat=not args.strict_upstream)
    for hf, g, qt, shape in log:
        print(f"{g:28s} <- {hf:48s} {qt.name:6s} {{{', '.join(str(d) for d in reversed(shape))}}}")
    for gap in gaps:
        print("adapted:", gap)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConvertError as e:
        print(f"bitnet_convert: {e}", file=sys.stderr)
        sys.exit(1)
