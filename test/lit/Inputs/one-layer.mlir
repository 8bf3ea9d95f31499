// A one-layer BitNet graph as `bitloom import` writes it (vocab 32, hidden
// 16, ffn 24, 2 heads of 8, 1 kv head), with LoRA on q and down.
func.func @forward(%tokens: tensor<?x?xi32>, %positions: tensor<?x?xi32>, %labels: tensor<?x?xi32>, %mask: tensor<?x?xf32>) -> (tensor<?x?x32xf32>, tensor<f32>) {
  %emb = loom.param "model.embed_tokens.weight" : tensor<32x16xf32>
  %x = loom.embedding %emb, %tokens : (tensor<32x16xf32>, tensor<?x?xi32>) -> tensor<?x?x16xf32>
  %n1 = loom.param "model.layers.0.input_layernorm.weight" : tensor<16xf32>
  %a = loom.rms_norm %x, %n1 {epsilon = 1.0e-5 : f64} : (tensor<?x?x16xf32>, tensor<16xf32>) -> tensor<?x?x16xf32>
  %wq = loom.param "model.layers.0.self_attn.q_proj.weight" : tensor<16x16xf32>
  %q0 = loom.bitlinear %a, %wq {weight_quant = #loom.weight_quant<online>} : (tensor<?x?x16xf32>, tensor<16x16xf32>) -> tensor<?x?x16xf32>
  %qa = loom.param "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" {kind = #loom.param_kind<lora_a>} : tensor<4x16xf32>
  %qb = loom.param "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight" {kind = #loom.param_kind<lora_b>} : tensor<16x4xf32>
  %q = loom.lora %q0, %a, %qa, %qb {alpha = 8.0 : f64, rank = 4 : i64} : (tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<4x16xf32>, tensor<16x4xf32>) -> tensor<?x?x16xf32>
  %wk = loom.param "model.layers.0.self_attn.k_proj.weight" : tensor<8x16xf32>
  %k = loom.bitlinear %a, %wk {weight_quant = #loom.weight_quant<online>} : (tensor<?x?x16xf32>, tensor<8x16xf32>) -> tensor<?x?x8xf32>
  %wv = loom.param "model.layers.0.self_attn.v_proj.weight" : tensor<8x16xf32>
  %v = loom.bitlinear %a, %wv {weight_quant = #loom.weight_quant<online>} : (tensor<?x?x16xf32>, tensor<8x16xf32>) -> tensor<?x?x8xf32>
  %qr = loom.rope %q, %positions {head_dim = 8 : i64, theta = 10000.0 : f64} : (tensor<?x?x16xf32>, tensor<?x?xi32>) -> tensor<?x?x16xf32>
  %kr = loom.rope %k, %positions {head_dim = 8 : i64, theta = 10000.0 : f64} : (tensor<?x?x8xf32>, tensor<?x?xi32>) -> tensor<?x?x8xf32>
  %o = loom.attention %qr, %kr, %v {num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 8 : i64, scale = 0.35355339059327373 : f64} : (tensor<?x?x16xf32>, tensor<?x?x8xf32>, tensor<?x?x8xf32>) -> tensor<?x?x16xf32>
  %n2 = loom.param "model.layers.0.self_attn.attn_sub_norm.weight" : tensor<16xf32>
  %on = loom.rms_norm %o, %n2 {epsilon = 1.0e-5 : f64} : (tensor<?x?x16xf32>, tensor<16xf32>) -> tensor<?x?x16xf32>
  %wo = loom.param "model.layers.0.self_attn.o_proj.weight" : tensor<16x16xf32>
  %op = loom.bitlinear %on, %wo {weight_quant = #loom.weight_quant<online>} : (tensor<?x?x16xf32>, tensor<16x16xf32>) -> tensor<?x?x16xf32>
  %h = loom.add %x, %op : tensor<?x?x16xf32>
  %n3 = loom.param "model.layers.0.post_attention_layernorm.weight" : tensor<16xf32>
  %m = loom.rms_norm %h, %n3 {epsilon = 1.0e-5 : f64} : (tensor<?x?x16xf32>, tensor<16xf32>) -> tensor<?x?x16xf32>
  %wg = loom.param "model.layers.0.mlp.gate_proj.weight" : tensor<24x16xf32>
  %g = loom.bitlinear %m, %wg {weight_quant = #loom.weight_quant<online>} : (tensor<?x?x16xf32>, tensor<24x16xf32>) -> tensor<?x?x24xf32>
  %wu = loom.param "model.layers.0.mlp.up_proj.weight" : tensor<24x16xf32>
  %u = loom.bitlinear %m, %wu {weight_quant = #loom.weight_quant<online>} : (tensor<?x?x16xf32>, tensor<24x16xf32>) -> tensor<?x?x24xf32>
  %g2 = loom.relu2 %g : tensor<?x?x24xf32>
  %f = loom.mul %g2, %u : tensor<?x?x24xf32>
  %n4 = loom.param "model.layers.0.mlp.ffn_sub_norm.weight" : tensor<24xf32>
  %fn = loom.rms_norm %f, %n4 {epsilon = 1.0e-5 : f64} : (tensor<?x?x24xf32>, tensor<24xf32>) -> tensor<?x?x24xf32>
  %wd = loom.param "model.layers.0.mlp.down_proj.weight" : tensor<16x24xf32>
  %d0 = loom.bitlinear %fn, %wd {weight_quant = #loom.weight_quant<online>} : (tensor<?x?x24xf32>, tensor<16x24xf32>) -> tensor<?x?x16xf32>
  %da = loom.param "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight" {kind = #loom.param_kind<lora_a>} : tensor<4x24xf32>
  %db = loom.param "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight" {kind = #loom.param_kind<lora_b>} : tensor<16x4xf32>
  %d = loom.lora %d0, %fn, %da, %db {alpha = 8.0 : f64, rank = 4 : i64} : (tensor<?x?x16xf32>, tensor<?x?x24xf32>, tensor<4x24xf32>, tensor<16x4xf32>) -> tensor<?x?x16xf32>
  %y = loom.add %h, %d : tensor<?x?x16xf32>
  %nf = loom.param "model.norm.weight" : tensor<16xf32>
  %yn = loom.rms_norm %y, %nf {epsilon = 1.0e-5 : f64} : (tensor<?x?x16xf32>, tensor<16xf32>) -> tensor<?x?x16xf32>
  %logits = loom.matmul %yn, %emb : (tensor<?x?x16xf32>, tensor<32x16xf32>) -> tensor<?x?x32xf32>
  %loss = loom.cross_entropy %logits, %labels, %mask : (tensor<?x?x32xf32>, tensor<?x?xi32>, tensor<?x?xf32>) -> tensor<f32>
  return %logits, %loss : tensor<?x?x32xf32>, tensor<f32>
}
