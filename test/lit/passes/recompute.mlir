// RUN: bitloom-opt %inputs/two-layers.mlir -loom-autodiff -mlir-print-debuginfo -o %t.ad.mlir
// RUN: bitloom-opt %t.ad.mlir -loom-recompute=layers=1 -mlir-print-debuginfo -mlir-print-local-scope | FileCheck %s --check-prefix=ONE
// RUN: bitloom-opt %t.ad.mlir -loom-recompute=layers=-1 -mlir-print-debuginfo -mlir-print-local-scope | FileCheck %s --check-prefix=ALL

// layers=0 changes nothing; neither does any layer count for @eval_step,
// @apply_step (no backward) or @forward.
// RUN: bitloom-opt %t.ad.mlir -o %t.none.mlir
// RUN: bitloom-opt %t.ad.mlir -loom-recompute=layers=0 -o %t.zero.mlir
// RUN: diff %t.none.mlir %t.zero.mlir
// RUN: bitloom-opt %t.ad.mlir -loom-recompute=layers=-1 -o %t.all.mlir
// RUN: sed -n -e '/func.func @eval_step/,/^  }/p' -e '/func.func @apply_step/,/^  }/p' -e '/func.func @forward/,/^  }/p' %t.none.mlir > %t.none.rest
// RUN: sed -n -e '/func.func @eval_step/,/^  }/p' -e '/func.func @apply_step/,/^  }/p' -e '/func.func @forward/,/^  }/p' %t.all.mlir > %t.all.rest
// RUN: diff %t.none.rest %t.all.rest
// RUN: FileCheck %s --check-prefix=REST < %t.all.rest
// REST: func.func @forward
// REST: func.func @eval_step
// REST: func.func @apply_step

// More layers than the model has: all of them, and the count says 2.
// RUN: bitloom-opt %t.ad.mlir -loom-recompute=layers=7 -o %t.seven.mlir
// RUN: diff %t.all.mlir %t.seven.mlir

// RUN: not bitloom-opt %t.ad.mlir -loom-recompute=layers=-2 -o /dev/null 2>&1 | FileCheck %s --check-prefix=ERR
// ERR: error: loom-recompute: layers must be -1 (all) or at least 0, not -2

// Layer 0 only. Its forward is unchanged; the backward of layer 1 (not
// chosen) reads layer 1's forward values as before.
// ONE-LABEL: func.func @train_step
// ONE-SAME: attributes {loom.recomputed_layers = 1 : i64}
// ONE: %[[X0:.*]] = loom.embedding {{.*}} loc("model.embed_tokens")
// ONE: %[[A0:.*]] = loom.rms_norm %[[X0]], {{.*}} loc("model.layers.0.input_layernorm")
// ONE: %[[O0:.*]] = loom.attention {{.*}} loc("model.layers.0.self_attn")
// ONE: %[[H0:.*]] = loom.add %[[X0]], {{.*}} loc("model.layers.0.self_attn.residual")
// ONE: %[[F0:.*]] = loom.mul {{.*}} loc("model.layers.0.mlp.gating")
// ONE: %[[FN0:.*]] = loom.rms_norm %[[F0]], {{.*}} loc("model.layers.0.mlp.ffn_sub_norm")
// ONE: loom.lora %{{.*}}, %[[FN0]], {{.*}} loc("model.layers.0.mlp.down_proj.lora")
// The checkpoint: layer 0's output, read by layer 1.
// ONE: %[[Y0:.*]] = loom.add %[[H0]], {{.*}} loc("model.layers.0.mlp.residual")
// ONE: %[[A1:.*]] = loom.rms_norm %[[Y0]], {{.*}} loc("model.layers.1.input_layernorm")
// ONE: %[[FN1:.*]] = loom.rms_norm {{.*}} loc("model.layers.1.mlp.ffn_sub_norm")
// ONE: loom.cross_entropy
// ONE: loom.lora_grad_params %{{.*}}, %[[FN1]], {{.*}} loc("model.layers.1.mlp.down_proj.lora")
// ONE: loom.lora_grad_params %{{.*}}, %[[A1]], {{.*}} loc("model.layers.1.self_attn.q_proj.lora")
// ONE: loom.rms_norm_grad_input %{{.*}}, %[[Y0]], {{.*}} loc("model.layers.1.input_layernorm")
// Layer 0's backward starts with the recomputation (its first op, the down
// adapter's parameter gradient, reads an activation): the same ops in
// forward order from the kept layer input, all but the ops only the
// checkpoint needs (down_proj, its adapter, the residual add).
// ONE: %[[RA:.*]] = loom.rms_norm %[[X0]], {{.*}} loc("model.layers.0.input_layernorm")
// ONE-NEXT: %[[RQ0:.*]] = loom.bitlinear %[[RA]], {{.*}} loc("model.layers.0.self_attn.q_proj")
// ONE-NEXT: %[[RQ:.*]] = loom.lora %[[RQ0]], %[[RA]], {{.*}} loc("model.layers.0.self_attn.q_proj.lora")
// ONE-NEXT: %[[RK:.*]] = loom.bitlinear %[[RA]], {{.*}} loc("model.layers.0.self_attn.k_proj")
// ONE-NEXT: %[[RV:.*]] = loom.bitlinear %[[RA]], {{.*}} loc("model.layers.0.self_attn.v_proj")
// ONE-NEXT: %[[RQR:.*]] = loom.rope %[[RQ]], {{.*}} loc("model.layers.0.self_attn.rotary_q")
// ONE-NEXT: %[[RKR:.*]] = loom.rope %[[RK]], {{.*}} loc("model.layers.0.self_attn.rotary_k")
// ONE-NEXT: %[[RO:.*]] = loom.attention %[[RQR]], %[[RKR]], %[[RV]] {{.*}} loc("model.layers.0.self_attn")
// ONE-NEXT: %[[RON:.*]] = loom.rms_norm %[[RO]], {{.*}} loc("model.layers.0.self_attn.attn_sub_norm")
// ONE-NEXT: %[[ROP:.*]] = loom.bitlinear %[[RON]], {{.*}} loc("model.layers.0.self_attn.o_proj")
// ONE-NEXT: %[[RH:.*]] = loom.add %[[X0]], %[[ROP]] {{.*}} loc("model.layers.0.self_attn.residual")
// ONE-NEXT: %[[RM:.*]] = loom.rms_norm %[[RH]], {{.*}} loc("model.layers.0.post_attention_layernorm")
// ONE-NEXT: %[[RG:.*]] = loom.bitlinear %[[RM]], {{.*}} loc("model.layers.0.mlp.gate_proj")
// ONE-NEXT: %[[RU:.*]] = loom.bitlinear %[[RM]], {{.*}} loc("model.layers.0.mlp.up_proj")
// ONE-NEXT: %[[RG2:.*]] = loom.relu2 %[[RG]] {{.*}} loc("model.layers.0.mlp.act_fn")
// ONE-NEXT: %[[RF:.*]] = loom.mul %[[RG2]], %[[RU]] {{.*}} loc("model.layers.0.mlp.gating")
// ONE-NEXT: %[[RFN:.*]] = loom.rms_norm %[[RF]], {{.*}} loc("model.layers.0.mlp.ffn_sub_norm")
// The backward reads only the clones.
// ONE-NEXT: loom.lora_grad_params %{{.*}}, %[[RFN]], {{.*}} loc("model.layers.0.mlp.down_proj.lora")
// relu²(gate) is recomputed once more for the gating adjoint instead of
// being held from the gated product to it.
// ONE: loom.rms_norm_grad_input %{{.*}}, %[[RF]], {{.*}} loc("model.layers.0.mlp.ffn_sub_norm")
// ONE-NEXT: loom.mul %{{.*}}, %[[RU]] {{.*}} loc("model.layers.0.mlp.gating")
// ONE-NEXT: %[[RG2B:.*]] = loom.relu2 %[[RG]] {{.*}} loc("model.layers.0.mlp.act_fn")
// ONE-NEXT: loom.mul %{{.*}}, %[[RG2B]] {{.*}} loc("model.layers.0.mlp.gating")
// ONE-NEXT: loom.relu2_grad %{{.*}}, %[[RG]] {{.*}} loc("model.layers.0.mlp.act_fn")
// ONE: loom.rms_norm_grad_input %{{.*}}, %[[RH]], {{.*}} loc("model.layers.0.post_attention_layernorm")
// ONE: loom.rms_norm_grad_input %{{.*}}, %[[RO]], {{.*}} loc("model.layers.0.self_attn.attn_sub_norm")
// ONE-NEXT: loom.attention_grad %{{.*}}, %[[RQR]], %[[RKR]], %[[RV]] {{.*}} loc("model.layers.0.self_attn")
// ONE: loom.lora_grad_params %{{.*}}, %[[RA]], {{.*}} loc("model.layers.0.self_attn.q_proj.lora")
// ONE-NOT: %[[A0]]{{[ ,)]}}
// ONE-NOT: %[[O0]]{{[ ,)]}}
// ONE-NOT: %[[H0]]{{[ ,)]}}
// ONE-NOT: %[[FN0]]{{[ ,)]}}
// ONE: return
// accumulate_step has a backward too.
// ONE-LABEL: func.func @accumulate_step
// ONE-SAME: attributes {loom.recomputed_layers = 1 : i64}
// ONE: loom.rms_norm_grad_input {{.*}} loc("model.layers.1.input_layernorm")
// ONE: loom.rms_norm %{{.*}} loc("model.layers.0.input_layernorm")

// All layers: layer 1's recomputation sits at the very start of its
// backward and also finds names inside fused and call-site locations (act_fn,
// gating); its backward reads the clones, layer 0's output stays the
// checkpoint both read.
// ALL-LABEL: func.func @train_step
// ALL-SAME: attributes {loom.recomputed_layers = 2 : i64}
// ALL: %[[Y0:.*]] = loom.add {{.*}} loc("model.layers.0.mlp.residual")
// ALL: %[[A1:.*]] = loom.rms_norm %[[Y0]], {{.*}} loc("model.layers.1.input_layernorm")
// ALL: %[[G21:.*]] = loom.relu2 {{.*}} loc(fused["model.layers.1.mlp.act_fn", "bitnet.py":7:3])
// ALL: %[[FN1:.*]] = loom.rms_norm {{.*}} loc("model.layers.1.mlp.ffn_sub_norm")
// ALL: loom.cross_entropy
// ALL: loom.rms_norm_grad_input {{.*}} loc("model.norm")
// ALL-NEXT: %[[RA1:.*]] = loom.rms_norm %[[Y0]], {{.*}} loc("model.layers.1.input_layernorm")
// ALL: %[[RG21:.*]] = loom.relu2 {{.*}} loc(fused["model.layers.1.mlp.act_fn", "bitnet.py":7:3])
// ALL-NEXT: %[[RF1:.*]] = loom.mul %[[RG21]], {{.*}} loc(callsite("model.layers.1.mlp.gating" at "bitnet.py":9:5))
// ALL-NEXT: %[[RFN1:.*]] = loom.rms_norm %[[RF1]], {{.*}} loc("model.layers.1.mlp.ffn_sub_norm")
// ALL-NEXT: loom.lora_grad_params %{{.*}}, %[[RFN1]], {{.*}} loc("model.layers.1.mlp.down_proj.lora")
// ALL: %[[RG21B:.*]] = loom.relu2 {{.*}} loc(fused["model.layers.1.mlp.act_fn", "bitnet.py":7:3])
// ALL-NEXT: loom.mul %{{.*}}, %[[RG21B]] {{.*}} loc(callsite("model.layers.1.mlp.gating" at "bitnet.py":9:5))
// ALL: loom.lora_grad_params %{{.*}}, %[[RA1]], {{.*}} loc("model.layers.1.self_attn.q_proj.lora")
// ALL: loom.rms_norm_grad_input %{{.*}}, %[[Y0]], {{.*}} loc("model.layers.1.input_layernorm")
// ALL: loom.rms_norm %{{.*}} loc("model.layers.0.input_layernorm")
// ALL-NOT: %[[A1]]{{[ ,)]}}
// ALL-NOT: %[[G21]]{{[ ,)]}}
// ALL-NOT: %[[FN1]]{{[ ,)]}}
// ALL: return
// ALL-LABEL: func.func @accumulate_step
// ALL-SAME: attributes {loom.recomputed_layers = 2 : i64}
