# Executables that load compiled CPU code (a .blm's shared object, dlopen'ed
# from memory) must export the micro-kernels the code calls: its undefined
# bitloom_uk_* symbols resolve against the executable at load time.
function(bitloom_export_ukernels target)
  target_link_libraries(${target} PRIVATE bitloom_ukernels)
  foreach(symbol bitloom_uk_ternary_matmul bitloom_uk_ternary_matmul_t
                 bitloom_uk_matmul_f32 bitloom_uk_matmul_f32_bf16b
                 bitloom_uk_set_threads
                 bitloom_uk_attention bitloom_uk_attention_grad
                 bitloom_uk_linear_cross_entropy
                 bitloom_uk_linear_cross_entropy_bf16w)
    target_link_options(${target} PRIVATE "LINKER:--undefined=${symbol}")
  endforeach()
  target_link_options(${target} PRIVATE
    "LINKER:--export-dynamic-symbol=bitloom_uk_*")
endfunction()
