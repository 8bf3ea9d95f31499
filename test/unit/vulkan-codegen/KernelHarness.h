//===- KernelHarness.h - Run one micro-kernel call's GPU kernels -*- C++
//-*-===//
//
// Tests of the Vulkan kernels that replace micro-kernel calls (Kernels.h):
// a module with
//
//   func.func @test(%0: <buffer 0 type>, %1: <buffer 1 type>, ...) {
//     %c0 = memref.cast %0 : memref<4x8xf32> to memref<?x?xf32>  (per buffer)
//     ...
//     call @<callee>(<operands: cast buffers and arith.constants>)
//   }
//
// (the memref form of -loom-lower-to-linalg{ukernels ukernel-memrefs}) goes
// through buildUkernelDispatches and compileKernelsToSpirv; the buffers are
// allocated on a Vulkan device, filled with the given bytes, the dispatches
// run in order in one command sequence, and every buffer is read back.
//
// Typical use (bitloom_uk_matmul_f32, c = a · b, a [4, 8], b [8, 2]):
//
//   KernelHarness h;                 // device 0; check h.available()
//   HarnessResult r = h.run(
//       "bitloom_uk_matmul_f32",
//       {{"memref<4x8xf32>", toBytes(a)}, {"memref<8x2xf32>", toBytes(b)},
//        {"memref<4x2xf32>", {}}},
//       {HarnessOperand::buffer(0), HarnessOperand::buffer(1),
//        HarnessOperand::buffer(2), HarnessOperand::i64(4),
//        HarnessOperand::i64(2), HarnessOperand::i64(8),
//        HarnessOperand::i32(0), HarnessOperand::i32(0),
//        HarnessOperand::i32(0)},
//       h.deviceTarget());
//   ASSERT_TRUE(r.ok) << r.error;
//   std::vector<float> c = fromBytes<float>(r.buffers[2]);
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_TEST_VULKAN_CODEGEN_KERNELHARNESS_H
#define BITLOOM_TEST_VULKAN_CODEGEN_KERNELHARNESS_H

#include "codegen/vulkan/Kernels.h"
#include "codegen/vulkan/Spirv.h"

#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace bitloom::vulkan {
class VulkanContext;
struct DeviceInfo;
} // namespace bitloom::vulkan

namespace bitloom::test {

/// One memref argument of @test.
struct HarnessBuffer {
  /// Its type in MLIR syntax, with a static shape and identity layout:
  /// "memref<64x128xi8>", "memref<f32>". The call sees it cast to the same
  /// rank with every dimension dynamic (a 0-d memref is passed as it is).
  std::string type;
  /// The contents before the dispatches: exactly the type's byte size, or
  /// empty for zeros.
  std::vector<uint8_t> bytes;
};

/// One operand of the micro-kernel call, in the callee's order.
struct HarnessOperand {
  enum class Kind { Buffer, I64, I32, F32 };
  Kind kind = Kind::Buffer;
  int64_t integer = 0; // the buffer's index, or the integer constant
  float real = 0;      // the f32 constant

  static HarnessOperand buffer(unsigned index) {
    return {Kind::Buffer, index, 0};
  }
  static HarnessOperand i64(int64_t v) { return {Kind::I64, v, 0}; }
  static HarnessOperand i32(int32_t v) { return {Kind::I32, v, 0}; }
  static HarnessOperand f32(float v) { return {Kind::F32, 0, v}; }
};

struct HarnessResult {
  /// False when a step failed; `error` then has the diagnostics (MLIR's,
  /// SPIRV-Tools' or the Vulkan error).
  bool ok = false;
  std::string error;
  /// Every buffer's contents after the dispatches, in argument order
  /// (empty from compileUkernelCall).
  std::vector<std::vector<uint8_t>> buffers;
  /// The dispatches in order: kernel, workgroup grid, and the buffers (as
  /// indices into the call's buffers) bound to bindings 0, 1, ...
  std::vector<std::string> kernels;
  std::vector<std::array<int64_t, 3>> workgroups;
  std::vector<std::vector<unsigned>> bindings;
  /// Each buffer's size in bytes.
  std::vector<int64_t> bufferBytes;
  /// The module with its gpu.modules, before SPIR-V conversion (for
  /// failure messages), and the compiled kernels (disassembleSpirv in
  /// codegen/vulkan/Spirv.h prints them).
  std::string kernelIR;
  std::vector<codegen::vulkan::SpirvKernel> spirv;
  /// Wall time of submitting the recorded dispatches and waiting for them
  /// (a second run of the same sequence, when timed).
  double seconds = 0;
};

/// The dispatches and SPIR-V kernels for one call of `callee` (what `run`
/// does before it needs a device): buffers' bytes are only checked.
HarnessResult compileUkernelCall(const std::string &callee,
                                 const std::vector<HarnessBuffer> &buffers,
                                 const std::vector<HarnessOperand> &operands,
                                 const codegen::vulkan::KernelTarget &target);

class KernelHarness {
public:
  /// A Vulkan context on physical device 0; available() is false (and
  /// unavailableReason() says why) when there is no usable device.
  KernelHarness();
  ~KernelHarness();

  bool available() const { return context != nullptr; }
  const std::string &unavailableReason() const { return reason; }
  bitloom::vulkan::VulkanContext &vulkan() { return *context; }

  /// What the device offers, as kernel generation sees it.
  codegen::vulkan::KernelTarget deviceTarget() const;

  /// Builds, compiles and runs the kernels for one call of `callee`. With
  /// `timed`, the dispatch sequence is submitted twice and the second
  /// submission is timed (outputs then come from two runs: only meaningful
  /// for kernels that overwrite their outputs).
  HarnessResult run(const std::string &callee,
                    const std::vector<HarnessBuffer> &buffers,
                    const std::vector<HarnessOperand> &operands,
                    const codegen::vulkan::KernelTarget &target,
                    bool timed = false);

private:
  std::unique_ptr<bitloom::vulkan::VulkanContext> context;
  std::string reason;
};

/// The bytes of a vector of trivially copyable values, and back.
template <typename T> std::vector<uint8_t> toBytes(const std::vector<T> &v) {
  std::vector<uint8_t> out(v.size() * sizeof(T));
  if (!v.empty())
    std::memcpy(out.data(), v.data(), out.size());
  return out;
}
template <typename T>
std::vector<T> fromBytes(const std::vector<uint8_t> &bytes) {
  std::vector<T> out(bytes.size() / sizeof(T));
  if (!out.empty())
    std::memcpy(out.data(), bytes.data(), out.size() * sizeof(T));
  return out;
}

} // namespace bitloom::test

#endif // BITLOOM_TEST_VULKAN_CODEGEN_KERNELHARNESS_H
