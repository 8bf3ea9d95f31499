#!/usr/bin/env python3
"""Compares bitloom's float reference kernels with PyTorch.

Usage: kernels_vs_torch.py <path to reference_kernels_dump>

The dump program runs the C++ kernels in float32 on deterministic inputs and
writes inputs and outputs; this script recomputes every output with the code
the kernels mirror (Hugging Face BitNet's WeightQuant / ActQuant, RMSNorm,
rotary embedding and eager attention; PEFT's LoRA; F.cross_entropy;
torch.optim.AdamW / SGD) and checks agreement to ~1e-6 relative.
Exits 77 (ctest SKIP_RETURN_CODE) when torch is not importable.
"""
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover
    print(f"SKIP: {e}")
    sys.exit(77)

RTOL = 1e-6


def load(d):
    tensors, scalars = {}, {}
    with open(os.path.join(d, "manifest.txt")) as f:
        for line in f:
            parts = line.split()
            if parts[0] == "scalar":
                scalars[parts[1]] = float(parts[2])
                continue
            name, dtype, rank = parts[1], parts[2], int(parts[3])
            dims = [int(x) for x in parts[4:4 + rank]]
            np_dtype = np.float32 if dtype == "f32" else np.int32
            data = np.fromfile(os.path.join(d, name + ".bin"), dtype=np_dtype)
            tensors[name] = torch.from_numpy(data.reshape(dims).copy())
    return tensors, scalars


failures = []


def check(name, ours, theirs, rtol=RTOL):
    """max |ours - theirs| <= rtol * max |theirs| (tensor-relative)."""
    ours = ours.detach().double()
    theirs = theirs.detach().double()
    assert ours.shape == theirs.shape, (name, ours.shape, theirs.shape)
    scale = theirs.abs().max().item()
    err = (ours - theirs).abs().max().item()
    rel = err / scale if scale > 0 else err
    exact = (ours == theirs).double().mean().item()
    ok = rel <= rtol
    print(f"{'ok  ' if ok else 'FAIL'} {name:<22} max rel err {rel:.2e}  "
          f"bit-exact {100 * exact:5.1f}%")
    if not ok:
        failures.append(name)


# --- Hugging Face transformers, integrations/bitnet.py (forward bodies) ----
class WeightQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        dtype = x.dtype
        x = x.float()
        s = 1.0 / x.abs().mean().clamp_(min=1e-5)
        x = (x * s).round().clamp(-1, 1) / s
        return x.to(dtype)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output.clone()


class ActQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        dtype = x.dtype
        x = x.float()
        s = 127 / x.abs().max(dim=-1, keepdim=True).values.clamp_(min=1e-5)
        x = (x * s).round().clamp(-128, 127) / s
        return x.to(dtype)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output.clone()


# --- models/bitnet/modeling_bitnet.py ---------------------------------------
def rms_norm(hidden_states, weight, eps):
    input_dtype = hidden_states.dtype
    hidden_states = hidden_states.to(torch.float32)
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    hidden_states = hidden_states * torch.rsqrt(variance + eps)
    return weight * hidden_states.to(input_dtype)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rotary_cos_sin(position_ids, dim, base):
    # modeling_rope_utils._compute_default_rope_parameters + forward
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(dtype=torch.float) / dim))
    inv_freq_expanded = inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)
    position_ids_expanded = position_ids[:, None, :].float()
    freqs = (inv_freq_expanded.float() @ position_ids_expanded.float()).transpose(1, 2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos() * 1.0, emb.sin() * 1.0


def repeat_kv(hidden_states, n_rep):
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


def eager_attention(query, key, value, attention_mask, scaling, groups):
    key_states = repeat_kv(key, groups)
    value_states = repeat_kv(value, groups)
    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_output = torch.matmul(attn_weights, value_states)
    return attn_output.transpose(1, 2).contiguous()


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.argv[1], d], check=True)
        t, s = load(d)

    # Quantizers, and an online AutoBitLinear with a PEFT LoRA adapter.
    check("ActQuant", t["qa_out"], ActQuant.apply(t["qa_x"]))
    check("WeightQuant", t["qw_out"], WeightQuant.apply(t["qw_w"]))
    x = t["qa_x"].clone().requires_grad_()
    W = t["qw_w"].clone().requires_grad_()
    A = t["lora_A"].clone().requires_grad_()
    B = t["lora_B"].clone().requires_grad_()
    base = F.linear(ActQuant.apply(x), WeightQuant.apply(W))
    y = base + F.linear(F.linear(x, A), B) * s["lora_scaling"]
    y.backward(t["bl_dy"])
    check("bitlinear+lora y", t["bl_y"], y)
    check("bitlinear+lora dx", t["bl_dx"], x.grad)
    check("bitlinear dW (STE)", t["bl_dW"], W.grad)
    check("lora dA", t["lora_dA"], A.grad)
    check("lora dB", t["lora_dB"], B.grad)

    # RMSNorm forward and autograd backward.
    x = t["rms_x"].clone().requires_grad_()
    w = t["rms_w"].clone().requires_grad_()
    y = rms_norm(x, w, s["rms_eps"])
    y.backward(t["rms_dy"])
    check("rmsNorm y", t["rms_y"], y)
    check("rmsNorm dx", t["rms_dx"], x.grad)
    check("rmsNorm dw", t["rms_dw"], w.grad)

    # RoPE: [B, T, H*D] -> [B, H, T, D] as HF applies it.
    xr = t["rope_x"]
    Bn, T, HD = xr.shape
    D = 16
    H = HD // D
    cos, sin = rotary_cos_sin(t["rope_pos"].long(), D, s["rope_theta"])
    q = xr.view(Bn, T, H, D).transpose(1, 2)
    q_embed = (q * cos.unsqueeze(1)) + (rotate_half(q) * sin.unsqueeze(1))
    check("rope", t["rope_y"], q_embed.transpose(1, 2).reshape(Bn, T, HD))
    q_inv = (q * cos.unsqueeze(1)) + (rotate_half(q) * -sin.unsqueeze(1))
    check("rope inverse", t["rope_yinv"], q_inv.transpose(1, 2).reshape(Bn, T, HD))

    # Causal GQA attention, forward and autograd backward.
    Hq, Hkv, D = int(s["attn_heads"]), int(s["attn_kv_heads"]), int(s["attn_head_dim"])
    qf, kf, vf = t["attn_q"], t["attn_k"], t["attn_v"]
    Bn, T, _ = qf.shape
    S = kf.shape[1]
    q = qf.view(Bn, T, Hq, D).transpose(1, 2).clone().requires_grad_()
    k = kf.view(Bn, S, Hkv, D).transpose(1, 2).clone().requires_grad_()
    v = vf.view(Bn, S, Hkv, D).transpose(1, 2).clone().requires_grad_()
    mask = torch.full((T, S), torch.finfo(torch.float32).min).triu(S - T + 1)
    out = eager_attention(q, k, v, mask[None, None], D ** -0.5, Hq // Hkv)
    out = out.reshape(Bn, T, Hq * D)
    out.backward(t["attn_dout"])
    check("attention out", t["attn_out"], out)
    check("attention dq", t["attn_dq"], q.grad.transpose(1, 2).reshape(Bn, T, Hq * D))
    check("attention dk", t["attn_dk"], k.grad.transpose(1, 2).reshape(Bn, S, Hkv * D))
    check("attention dv", t["attn_dv"], v.grad.transpose(1, 2).reshape(Bn, S, Hkv * D))

    # Masked cross-entropy (labels -100 on masked-out rows), mean reduction.
    logits = t["ce_logits"].clone().requires_grad_()
    loss = F.cross_entropy(logits, t["ce_labels"].long(), ignore_index=-100)
    loss.backward()
    check("crossEntropy loss", t["ce_loss"], loss.reshape(1))
    check("crossEntropy dlogits", t["ce_dlogits"], logits.grad)
    if int(s["ce_count"]) != int((t["ce_labels"] != -100).sum()):
        failures.append("crossEntropy count")

    # Optimizers, three steps each.
    p = t["opt_p0"].clone().requires_grad_()
    ps = t["opt_p0"].clone().requires_grad_()
    adamw = torch.optim.AdamW([p], lr=1e-2, betas=(0.9, 0.999), eps=1e-8,
                              weight_decay=0.01, foreach=False)
    sgd = torch.optim.SGD([ps], lr=0.05, momentum=0.9, weight_decay=0.1,
                          foreach=False)
    for step in (1, 2, 3):
        g = t[f"opt_g{step}"]
        p.grad = g.clone()
        ps.grad = g.clone()
        adamw.step()
        sgd.step()
        st = adamw.state[p]
        check(f"adamw p step {step}", t[f"adamw_p{step}"], p)
        check(f"adamw m step {step}", t[f"adamw_m{step}"], st["exp_avg"])
        check(f"adamw v step {step}", t[f"adamw_v{step}"], st["exp_avg_sq"])
        check(f"sgd p step {step}", t[f"sgd_p{step}"], ps)

    if failures:
        print("FAILED:", ", ".join(failures))
        return 1
    print("all reference kernels match torch", torch.__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
