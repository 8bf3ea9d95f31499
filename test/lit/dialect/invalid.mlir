// RUN: bitloom-opt %s -split-input-file -verify-diagnostics

// Verifiers reject wrong shapes, dtypes and attributes with a clear message.

func.func @bitlinear_in_features(%x: tensor<?x?x32xf32>, %w: tensor<64x64xf32>) {
  // expected-error @+1 {{input features is 32 but must equal the weight's input dimension (64)}}
  %y = loom.bitlinear %x, %w {weight_quant = #loom.weight_quant<online>} : (tensor<?x?x32xf32>, tensor<64x64xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @bitlinear_online_ternary(%x: tensor<?x?x256xf32>, %w: !loom.ternary<64x256, tq2_0>) {
  // expected-error @+1 {{weight_quant online needs f32 master weights}}
  %y = loom.bitlinear %x, %w {weight_quant = #loom.weight_quant<online>} : (tensor<?x?x256xf32>, !loom.ternary<64x256, tq2_0>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @bitlinear_offline_float(%x: tensor<?x?x64xf32>, %w: tensor<64x64xf32>) {
  // expected-error @+1 {{weight_quant offline needs a !loom.ternary weight}}
  %y = loom.bitlinear %x, %w {weight_quant = #loom.weight_quant<offline>} : (tensor<?x?x64xf32>, tensor<64x64xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @bitlinear_result(%x: tensor<?x?x64xf32>, %w: tensor<32x64xf32>) {
  // expected-error @+1 {{result features is 64 but must equal the produced features (32)}}
  %y = loom.bitlinear %x, %w {weight_quant = #loom.weight_quant<online>} : (tensor<?x?x64xf32>, tensor<32x64xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @bitlinear_int_input(%x: tensor<?x?x64xi32>, %w: tensor<32x64xf32>) {
  // expected-error @+1 {{operand #0 must be tensor of 32-bit float values}}
  %y = loom.bitlinear %x, %w {weight_quant = #loom.weight_quant<online>} : (tensor<?x?x64xi32>, tensor<32x64xf32>) -> tensor<?x?x32xf32>
  return
}

// -----

// expected-error @+1 {{tq2_0 packs 256 weights a block along the input dimension, but the input dimension is 64}}
func.func private @tq_rows(!loom.ternary<64x64, tq2_0>)

// -----

// expected-error @+1 {{hf_u8 packs 4 rows a byte, but the output dimension 6 is not a multiple of 4}}
func.func private @hf_rows(!loom.ternary<6x64, hf_u8>)

// -----

// expected-error @+1 {{unknown ternary packing 'q4_k'}}
func.func private @bad_packing(!loom.ternary<8x256, q4_k>)

// -----

func.func @lora_rank(%base: tensor<?x?x64xf32>, %x: tensor<?x?x64xf32>, %a: tensor<8x64xf32>, %b: tensor<64x4xf32>) {
  // expected-error @+1 {{lora_b columns is 4 but must equal rank (8)}}
  %y = loom.lora %base, %x, %a, %b {alpha = 16.0 : f64, rank = 8 : i64} : (tensor<?x?x64xf32>, tensor<?x?x64xf32>, tensor<8x64xf32>, tensor<64x4xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @lora_out(%base: tensor<?x?x32xf32>, %x: tensor<?x?x64xf32>, %a: tensor<8x64xf32>, %b: tensor<64x8xf32>) {
  // expected-error @+1 {{lora_b rows is 64 but must equal the adapted layer's output features (32)}}
  %y = loom.lora %base, %x, %a, %b {alpha = 16.0 : f64, rank = 8 : i64} : (tensor<?x?x32xf32>, tensor<?x?x64xf32>, tensor<8x64xf32>, tensor<64x8xf32>) -> tensor<?x?x32xf32>
  return
}

// -----

func.func @lora_dropout(%base: tensor<?x?x64xf32>, %x: tensor<?x?x64xf32>, %a: tensor<8x64xf32>, %b: tensor<64x8xf32>) {
  // expected-error @+1 {{dropout must be in [0, 1)}}
  %y = loom.lora %base, %x, %a, %b {alpha = 16.0 : f64, rank = 8 : i64, dropout = 1.5 : f64} : (tensor<?x?x64xf32>, tensor<?x?x64xf32>, tensor<8x64xf32>, tensor<64x8xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @gqa_groups(%q: tensor<?x?x48xf32>, %k: tensor<?x?x32xf32>) {
  // expected-error @+1 {{num_heads (3) must be a multiple of num_kv_heads (2)}}
  %o = loom.attention %q, %k, %k {num_heads = 3 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64} : (tensor<?x?x48xf32>, tensor<?x?x32xf32>, tensor<?x?x32xf32>) -> tensor<?x?x48xf32>
  return
}

// -----

func.func @attention_kv_features(%q: tensor<?x?x64xf32>, %k: tensor<?x?x64xf32>) {
  // expected-error @+1 {{key features is 64 but must equal num_kv_heads * head_dim (32)}}
  %o = loom.attention %q, %k, %k {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, scale = 0.25 : f64} : (tensor<?x?x64xf32>, tensor<?x?x64xf32>, tensor<?x?x64xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @rope_odd(%x: tensor<?x?x60xf32>, %p: tensor<?x?xi32>) {
  // expected-error @+1 {{head_dim must be positive and even, got 15}}
  %y = loom.rope %x, %p {head_dim = 15 : i64, theta = 10000.0 : f64} : (tensor<?x?x60xf32>, tensor<?x?xi32>) -> tensor<?x?x60xf32>
  return
}

// -----

func.func @rms_weight(%x: tensor<?x?x64xf32>, %w: tensor<32xf32>) {
  // expected-error @+1 {{weight size is 32 but must equal the input's last dimension (64)}}
  %y = loom.rms_norm %x, %w {epsilon = 1.0e-5 : f64} : (tensor<?x?x64xf32>, tensor<32xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @embedding_tokens(%t: tensor<512x64xf32>, %ids: tensor<?x?x?xi32>) {
  // expected-error @+1 {{tokens must have rank 2, got 3}}
  %x = loom.embedding %t, %ids : (tensor<512x64xf32>, tensor<?x?x?xi32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @ce_labels(%l: tensor<2x8x512xf32>, %y: tensor<2x7xi32>, %m: tensor<2x8xf32>) {
  // expected-error @+1 {{labels tokens is 7 but must equal logits tokens (8)}}
  %loss = loom.cross_entropy %l, %y, %m : (tensor<2x8x512xf32>, tensor<2x7xi32>, tensor<2x8xf32>) -> tensor<f32>
  return
}

// -----

func.func @ce_result(%l: tensor<2x8x512xf32>, %y: tensor<2x8xi32>, %m: tensor<2x8xf32>) {
  // expected-error @+1 {{result #0 must be 0D tensor of 32-bit float values}}
  %loss = loom.cross_entropy %l, %y, %m : (tensor<2x8x512xf32>, tensor<2x8xi32>, tensor<2x8xf32>) -> tensor<1xf32>
  return
}

// -----

func.func @param_name() {
  // expected-error @+1 {{parameter name must not be empty}}
  %w = loom.param "" : tensor<4x4xf32>
  return
}

// -----

func.func @param_lora_dynamic() {
  // expected-error @+1 {{parameters must have a static shape}}
  %w = loom.param "x" : tensor<?x4xf32>
  return
}

// -----

func.func @matmul_k(%x: tensor<?x?x64xf32>, %w: tensor<512x32xf32>) {
  // expected-error @+1 {{input features is 64 but must equal the weight's columns (32)}}
  %y = loom.matmul %x, %w : (tensor<?x?x64xf32>, tensor<512x32xf32>) -> tensor<?x?x512xf32>
  return
}

// -----

func.func @elementwise_types(%a: tensor<?x?x64xf32>, %b: tensor<?x?x32xf32>) {
  // expected-error @+1 {{requires the same type for all operands and results}}
  %y = "loom.add"(%a, %b) : (tensor<?x?x64xf32>, tensor<?x?x32xf32>) -> tensor<?x?x64xf32>
  return
}
