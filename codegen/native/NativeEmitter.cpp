//===- NativeEmitter.cpp - LLVM dialect to a loadable shared object -------===//
#include "codegen/native/NativeEmitter.h"

#include "formats/Error.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/IR/Builders.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Export.h"
#include "llvm/Bitcode/BitcodeWriter.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/Triple.h"
#include "llvm/Transforms/IPO/LoopExtractor.h"
#include "llvm/Transforms/Utils/LoopSimplify.h"

#include <mutex>

using namespace mlir;

namespace bitloom::native {

NativeTarget resolveNativeTarget(const std::string &target,
                                 const std::string &cpu) {
  NativeTarget result;
  std::string hostArch =
      llvm::Triple(llvm::sys::getProcessTriple()).getArchName().str();
  std::string arch;
  if (target == "cpu-x86_64") {
    result.triple = "x86_64-unknown-linux-gnu";
    arch = "x86_64";
  } else if (target == "cpu-arm64") {
    result.triple = "aarch64-unknown-linux-gnu";
    arch = "aarch64";
  } else {
    throw FormatError("", "--target",
                      "'" + target +
                          "' is not a native CPU target "
                          "(cpu-x86_64, cpu-arm64)");
  }
  if (cpu == "native") {
    if (hostArch != arch)
      throw FormatError("", "--cpu",
                        "'native' means this machine (" + hostArch +
                            "); name a CPU for " + target);
    result.cpu = llvm::sys::getHostCPUName().str();
    llvm::StringMap<bool> features = llvm::sys::getHostCPUFeatures();
    for (auto &f : features)
      result.features += (result.features.empty() ? "" : ",") +
                         std::string(f.second ? "+" : "-") + f.first().str();
  } else if (cpu == "generic" || cpu.empty()) {
    result.cpu = arch == "x86_64" ? "x86-64" : "generic";
  } else {
    result.cpu = cpu;
  }
  return result;
}

void addPackedEntryPoints(ModuleOp module) {
  OpBuilder b(module.getContext());
  auto ptrType = LLVM::LLVMPointerType::get(module.getContext());
  SmallVector<LLVM::LLVMFuncOp> functions;
  for (auto func : module.getOps<LLVM::LLVMFuncOp>())
    if (!func.isExternal() && !func.isPrivate() &&
        !func.getName().ends_with("_packed"))
      functions.push_back(func);
  for (LLVM::LLVMFuncOp func : functions) {
    auto type = func.getFunctionType();
    if (!llvm::all_of(type.getParams(),
                      [](Type t) { return isa<LLVM::LLVMPointerType>(t); }))
      continue;
    b.setInsertionPointAfter(func);
    auto packed = LLVM::LLVMFuncOp::create(
        b, func.getLoc(), (func.getName() + "_packed").str(),
        LLVM::LLVMFunctionType::get(LLVM::LLVMVoidType::get(b.getContext()),
                                    {ptrType}));
    Block *entry = packed.addEntryBlock(b);
    b.setInsertionPointToStart(entry);
    SmallVector<Value> args;
    for (unsigned i = 0; i < type.getNumParams(); ++i) {
      Value slot = LLVM::GEPOp::create(b, func.getLoc(), ptrType, ptrType,
                                       entry->getArgument(0),
                                       ArrayRef<LLVM::GEPArg>{int32_t(i)});
      args.push_back(LLVM::LoadOp::create(b, func.getLoc(), ptrType, slot));
    }
    LLVM::CallOp::create(b, func.getLoc(), func, args);
    LLVM::ReturnOp::create(b, func.getLoc(), ValueRange{});
  }
}

static void initializeTargets() {
  static std::once_flag once;
  std::call_once(once, [] {
    llvm::InitializeAllTargetInfos();
    llvm::InitializeAllTargets();
    llvm::InitializeAllTargetMCs();
    llvm::InitializeAllAsmPrinters();
  });
}

std::unique_ptr<llvm::TargetMachine>
createTargetMachine(const NativeTarget &target) {
  initializeTargets();
  llvm::Triple triple(target.triple);
  std::string error;
  const llvm::Target *llvmTarget =
      llvm::TargetRegistry::lookupTarget(triple, error);
  if (!llvmTarget)
    throw FormatError("", "--target", error);
  llvm::TargetOptions options;
  std::unique_ptr<llvm::TargetMachine> machine(llvmTarget->createTargetMachine(
      triple, target.cpu, target.features, options, llvm::Reloc::PIC_,
      std::nullopt, llvm::CodeGenOptLevel::Aggressive));
  if (!machine)
    throw FormatError("", "--cpu", "LLVM cannot target '" + target.cpu + "'");
  return machine;
}

std::vector<uint8_t> emitSharedObject(ModuleOp module,
                                      const NativeTarget &target,
                                      std::string *assembly,
                                      std::string *bitcode) {
  initializeTargets();
  registerBuiltinDialectTranslation(*module.getContext());
  registerLLVMDialectTranslation(*module.getContext());
  llvm::LLVMContext llvmContext;
  std::unique_ptr<llvm::Module> llvmModule =
      translateModuleToLLVMIR(module, llvmContext, "bitloom");
  if (!llvmModule)
    throw FormatError("", "codegen", "translation to LLVM IR failed");

  llvm::Triple triple(target.triple);
  std::unique_ptr<llvm::TargetMachine> machine = createTargetMachine(target);
  llvmModule->setDataLayout(machine->createDataLayout());
  llvmModule->setTargetTriple(triple);

  static const llvm::OptimizationLevel levels[] = {
      llvm::OptimizationLevel::O0, llvm::OptimizationLevel::O1,
      llvm::OptimizationLevel::O2, llvm::OptimizationLevel::O3};
  if (target.optLevel > 0) {
    llvm::LoopAnalysisManager lam;
    llvm::FunctionAnalysisManager fam;
    llvm::CGSCCAnalysisManager cgam;
    llvm::ModuleAnalysisManager mam;
    llvm::PassBuilder pb(machine.get());
    pb.registerModuleAnalyses(mam);
    pb.registerCGSCCAnalyses(cgam);
    pb.registerFunctionAnalyses(fam);
    pb.registerLoopAnalyses(lam);
    pb.crossRegisterProxies(lam, fam, cgam, mam);
    // A training step is one huge straight-line function of thousands of
    // loop nests, on which LLVM's function passes (SCEV, dominators) grow
    // superlinearly: 12 layers took minutes. Each top-level loop nest
    // becomes its own function first and stays out of line, so the
    // optimizer sees many small functions.
    {
      llvm::ModulePassManager extract;
      llvm::FunctionPassManager simplify;
      simplify.addPass(llvm::LoopSimplifyPass());
      extract.addPass(
          llvm::createModuleToFunctionPassAdaptor(std::move(simplify)));
      extract.addPass(llvm::LoopExtractorPass());
      extract.run(*llvmModule, mam);
      for (llvm::Function &f : *llvmModule)
        if (!f.isDeclaration() && f.hasLocalLinkage())
          f.addFnAttr(llvm::Attribute::NoInline);
    }
    llvm::ModulePassManager mpm = pb.buildPerModuleDefaultPipeline(
        levels[std::clamp(target.optLevel, 0, 3)]);
    mpm.run(*llvmModule, mam);
  }

  // The optimized module, before code generation's own IR passes touch it.
  if (bitcode) {
    bitcode->clear();
    llvm::raw_string_ostream os(*bitcode);
    llvm::WriteBitcodeToFile(*llvmModule, os);
  }

  auto emit = [&](llvm::CodeGenFileType kind) {
    llvm::SmallVector<char, 0> buffer;
    llvm::raw_svector_ostream os(buffer);
    llvm::legacy::PassManager pm;
    if (machine->addPassesToEmitFile(pm, os, nullptr, kind))
      throw FormatError("", "--target", "LLVM cannot emit code for it");
    pm.run(*llvmModule);
    return std::string(buffer.begin(), buffer.end());
  };
  if (assembly)
    *assembly = emit(llvm::CodeGenFileType::AssemblyFile);
  std::string object = emit(llvm::CodeGenFileType::ObjectFile);

  // Link into a shared object with lld (installed with LLVM 22).
  llvm::SmallString<128> objectPath, sharedPath;
  int objectFd;
  if (llvm::sys::fs::createTemporaryFile("bitloom", "o", objectFd, objectPath))
    throw FormatError("", "codegen", "cannot create a temporary file");
  {
    llvm::raw_fd_ostream out(objectFd, /*shouldClose=*/true);
    out << object;
  }
  if (llvm::sys::fs::createTemporaryFile("bitloom", "so", sharedPath)) {
    llvm::sys::fs::remove(objectPath);
    throw FormatError("", "codegen", "cannot create a temporary file");
  }
  auto lld = llvm::sys::findProgramByName("ld.lld",
                                          {"/usr/lib/llvm-22/bin", "/usr/bin"});
  if (!lld) {
    llvm::sys::fs::remove(objectPath);
    throw FormatError("", "codegen", "ld.lld not found (install lld-22)");
  }
  std::string emulation = triple.isAArch64() ? "aarch64linux" : "elf_x86_64";
  llvm::SmallVector<llvm::StringRef> argv = {
      *lld, "-shared",  "-m",      emulation, "--hash-style=both",
      "-o", sharedPath, objectPath};
  std::string linkError;
  int status =
      llvm::sys::ExecuteAndWait(*lld, argv, std::nullopt, {}, 0, 0, &linkError);
  llvm::sys::fs::remove(objectPath);
  auto bytes = llvm::MemoryBuffer::getFile(sharedPath);
  llvm::sys::fs::remove(sharedPath);
  if (status != 0 || !bytes)
    throw FormatError("", "codegen", "linking failed: " + linkError);
  const char *begin = (*bytes)->getBufferStart();
  return std::vector<uint8_t>(begin, begin + (*bytes)->getBufferSize());
}

} // namespace bitloom::native
