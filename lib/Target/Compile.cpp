//===- Compile.cpp - from a model file to kernel images and a C++ API ---===//

#include "lib/Target/Compile.h"
#include "lib/Conversion/GatedKernels.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"

#include "dialect/MMRecAttrs.h"
#include "dialect/MMRecDialect.h"
#include "dialect/MMRecOps.h"
#include "dialect/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Target/LLVMIR/Export.h"

#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/Target/TargetOptions.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/Triple.h"

#include <sstream>

using namespace mlir;
using namespace mlir::mmrec;

LogicalResult mlir::mmrec::runCompilerPipeline(ModuleOp module) {
  PassManager pm(module.getContext());
  buildMMRecCompilerPipeline(pm);
  return pm.run(module);
}

/// Runs `pipeline` (the passes of a builtin.module, without the anchor).
static LogicalResult runPipeline(ModuleOp module, StringRef pipeline) {
  PassManager pm(module.getContext());
  if (failed(parsePassPipeline(pipeline, pm, llvm::errs())))
    return failure();
  return pm.run(module);
}

/// The GPU pipeline up to NVVM (`toLlvm`, ending in reconcile-unrealized-
/// casts), then gpu-module-to-binary{format}. In between, the dynamic
/// shared memory symbols that convert-gpu-to-nvvm creates (internal, zero
/// length) become external: an internal one is a 1-byte *static* variable
/// to NVPTX (demoted into the one kernel that uses it), which ptxas may
/// place before the kernel's static shared buffers, so that the "dynamic"
/// region overlapped them (a staged scan kernel wrote 16-byte vectors at
/// offset 0x404: misaligned). `.extern .shared .b8 x[]` is CUDA's dynamic
/// shared memory: it starts after every static buffer. The static shared
/// buffers (gpu.func workgroup attributions) are aligned to 16 bytes: the
/// kernels read and write them with 16-byte vectors, and the element type
/// alone gives f32 arrays `.align 4`.
static LogicalResult runGpuPipeline(ModuleOp module, StringRef toLlvm, StringRef format) {
  if (failed(runPipeline(module, toLlvm)))
    return failure();
  module.walk([](LLVM::GlobalOp g) {
    auto array = llvm::dyn_cast<LLVM::LLVMArrayType>(g.getGlobalType());
    if (g.getAddrSpace() != 3 || !array)
      return;
    if (array.getNumElements() == 0 && !g.getValueOrNull() && g.getInitializerRegion().empty())
      g.setLinkage(LLVM::Linkage::External);
    else if (g.getAlignment().value_or(0) < 16)
      g.setAlignment(16);
  });
  return runPipeline(module, (llvm::Twine("gpu-module-to-binary{format=") + format + "}").str());
}

/// Runs ptxas on `ptx`; fills cubin and log. Returns false when ptxas is
/// not installed; fails when it rejects the PTX.
static FailureOr<bool> runPtxas(const std::string &ptx, const std::string &arch,
                                std::vector<char> &cubin, std::string &log) {
  auto ptxas = llvm::sys::findProgramByName("ptxas", {"/usr/local/cuda/bin"});
  if (!ptxas)
    return false;
  SmallString<128> in, outPath, logPath;
  int fd;
  if (llvm::sys::fs::createTemporaryFile("mmrec", "ptx", fd, in))
    return failure();
  {
    llvm::raw_fd_ostream os(fd, /*shouldClose=*/true);
    os << ptx;
  }
  llvm::sys::fs::createTemporaryFile("mmrec", "cubin", outPath);
  llvm::sys::fs::createTemporaryFile("mmrec", "log", logPath);
  std::string archFlag = "-arch=" + arch;
  SmallVector<StringRef> args{*ptxas, archFlag, "-v", "-O3", in, "-o", outPath};
  std::optional<StringRef> redirects[] = {std::nullopt, StringRef(logPath), StringRef(logPath)};
  std::string err;
  int rc = llvm::sys::ExecuteAndWait(*ptxas, args, std::nullopt, redirects, 0, 0, &err);
  if (auto buf = llvm::MemoryBuffer::getFile(logPath))
    log = (*buf)->getBuffer().str();
  if (rc == 0)
    if (auto buf = llvm::MemoryBuffer::getFile(outPath))
      cubin.assign((*buf)->getBufferStart(), (*buf)->getBufferEnd());
  llvm::sys::fs::remove(in);
  llvm::sys::fs::remove(outPath);
  llvm::sys::fs::remove(logPath);
  if (rc != 0) {
    llvm::errs() << "error: ptxas rejected the generated PTX" << (err.empty() ? "" : ": ")
                 << err << "\n" << log;
    return failure();
  }
  return true;
}

/// Fails, naming the kernel, when a `ptxas -v` log reports a stack frame or
/// spills (local memory).
static LogicalResult checkPtxasLog(const std::string &log) {
  std::istringstream is(log);
  std::string line, fn;
  bool bad = false;
  while (std::getline(is, line)) {
    auto at = line.find("Compiling entry function '");
    if (at != std::string::npos)
      fn = line.substr(at + 26, line.find('\'', at + 26) - at - 26);
    if ((line.find("bytes stack frame") != std::string::npos &&
         line.find(" 0 bytes stack frame") == std::string::npos) ||
        (line.find("spill stores") != std::string::npos &&
         line.find(" 0 bytes spill stores, 0 bytes spill loads") == std::string::npos)) {
      llvm::errs() << "error: kernel '" << fn << "' uses local memory or spills: " << line
                   << "\n";
      bad = true;
    }
  }
  return failure(bad);
}

LogicalResult mlir::mmrec::emitNvptx(ModuleOp module, const CompileOptions &opts,
                                     KernelImages &out, ArrayAttr &kernels,
                                     std::string *llvmIR) {
  OwningOpRef<ModuleOp> clone = module.clone();
  std::string outline = llvm::formatv(
      "mmrec-outline-scan-kernels{{target=nvptx vec={0} steps={1} warps={2} min-blocks={3} "
      "stage={4} stream={5} ticket={6}}",
      opts.scanVec, opts.scanSteps, opts.scanWarps, opts.scanMinBlocks, opts.scanStage,
      opts.scanStream, opts.scanTicket);
  if (failed(runPipeline(*clone, outline)))
    return failure();
  kernels = (*clone)->getAttrOfType<ArrayAttr>("mmrec.kernels");
  if (!kernels || kernels.empty())
    return success();
  // Keep only the gpu.module in a fresh container module.
  OwningOpRef<ModuleOp> gpuOnly = ModuleOp::create(clone->getLoc());
  for (auto gm : llvm::make_early_inc_range(clone->getOps<gpu::GPUModuleOp>())) {
    gm->remove();
    gpuOnly->getBody()->push_back(gm);
  }
  std::string format = llvmIR ? "llvm" : "isa";
  std::string pipeline = llvm::formatv(
      "nvvm-attach-target{{chip={0} O=3},gpu.module(convert-scf-to-cf,"
      "convert-gpu-to-nvvm,convert-nvvm-to-llvm,canonicalize,cse),"
      "reconcile-unrealized-casts",
      opts.arch);
  if (failed(runGpuPipeline(*gpuOnly, pipeline, format)))
    return failure();
  for (auto bin : gpuOnly->getOps<gpu::BinaryOp>()) {
    auto obj = llvm::cast<gpu::ObjectAttr>(bin.getObjects()[0]);
    if (llvmIR) {
      *llvmIR = obj.getObject().getValue().str();
      return success();
    }
    out.ptx = obj.getObject().getValue().str();
  }
  FailureOr<bool> assembled = runPtxas(out.ptx, opts.arch, out.cubin, out.ptxasLog);
  if (failed(assembled))
    return failure();
  if (opts.checkSpills) {
    if (!*assembled) {
      llvm::errs() << "error: --check-spills needs ptxas (not found on PATH or in "
                      "/usr/local/cuda/bin)\n";
      return failure();
    }
    return checkPtxasLog(out.ptxasLog);
  }
  return success();
}

/// The host lowering of CPU kernels; bf16 casts are expanded to integer
/// arithmetic (the host's libgcc may not provide __truncsfbf2).
static constexpr const char *kHostLowering =
    "arith-expand{include-bf16=true},convert-scf-to-cf,"
    "convert-math-to-libm,convert-math-to-llvm,"
    "expand-strided-metadata,finalize-memref-to-llvm,"
    "convert-arith-to-llvm,convert-cf-to-llvm,convert-func-to-llvm,"
    "reconcile-unrealized-casts";

/// Lowers a module of CPU `func.func` kernels to LLVM and compiles it to a
/// host object (or, with `llvmIR`, prints the optimized LLVM IR). With
/// `lowered`, the module is already in the LLVM dialect.
static LogicalResult lowerCpuModule(ModuleOp cpu, const CompileOptions &opts,
                                    std::vector<char> &object, std::string *llvmIR,
                                    bool lowered = false) {
  if (!lowered && failed(runPipeline(cpu, kHostLowering)))
    return failure();
  llvm::InitializeNativeTarget();
  llvm::InitializeNativeTargetAsmPrinter();
  llvm::LLVMContext llctx;
  std::unique_ptr<llvm::Module> llm = translateModuleToLLVMIR(cpu, llctx, opts.name);
  if (!llm) {
    cpu->emitError() << "translation of the CPU kernels to LLVM IR failed";
    return failure();
  }
  llvm::Triple triple(llvm::sys::getDefaultTargetTriple());
  std::string err;
  const llvm::Target *target = llvm::TargetRegistry::lookupTarget(triple, err);
  if (!target) {
    llvm::errs() << "error: no LLVM target for " << triple.str() << ": " << err << "\n";
    return failure();
  }
  llvm::TargetOptions to;
  std::unique_ptr<llvm::TargetMachine> tm(target->createTargetMachine(
      triple, "x86-64-v2", "", to, llvm::Reloc::PIC_));
  llm->setDataLayout(tm->createDataLayout());
  llm->setTargetTriple(triple);
  auto transformer = makeOptimizingTransformer(3, 0, tm.get());
  if (auto e = transformer(llm.get())) {
    llvm::errs() << "error: optimizing the CPU kernels: " << llvm::toString(std::move(e)) << "\n";
    return failure();
  }
  if (llvmIR) {
    llvm::raw_string_ostream os(*llvmIR);
    llm->print(os, nullptr);
    return success();
  }
  llvm::SmallVector<char, 0> buf;
  llvm::raw_svector_ostream os(buf);
  llvm::legacy::PassManager pm;
  if (tm->addPassesToEmitFile(pm, os, nullptr, llvm::CodeGenFileType::ObjectFile)) {
    llvm::errs() << "error: the host target cannot emit object files\n";
    return failure();
  }
  pm.run(*llm);
  object.assign(buf.begin(), buf.end());
  return success();
}

LogicalResult mlir::mmrec::emitCpuObject(ModuleOp module, const CompileOptions &opts,
                                         KernelImages &out, ArrayAttr &kernels,
                                         std::string *llvmIR) {
  OwningOpRef<ModuleOp> clone = module.clone();
  if (failed(runPipeline(*clone, "mmrec-outline-scan-kernels{target=cpu}")))
    return failure();
  kernels = (*clone)->getAttrOfType<ArrayAttr>("mmrec.kernels");
  if (!kernels || kernels.empty())
    return success();
  // Move the kernels (and only them) into a module of their own.
  OwningOpRef<ModuleOp> cpu = ModuleOp::create(clone->getLoc());
  for (Attribute a : kernels) {
    auto name = llvm::cast<DictionaryAttr>(a).getAs<StringAttr>("name");
    auto f = clone->lookupSymbol<func::FuncOp>(name);
    f->remove();
    f.setSymName(("mmrec_cpu_" + opts.name + "_" + name.getValue()).str());
    f->removeAttr("llvm.emit_c_interface");
    cpu->getBody()->push_back(f);
  }
  return lowerCpuModule(*cpu, opts, out.cpuObject, llvmIR);
}

//===----------------------------------------------------------------------===//
// The generated C++ API
//===----------------------------------------------------------------------===//

namespace {

struct KernelInfo {
  std::string name, op, target;
  std::string dtype; // runtime DType enumerator of the I/O type
  bool hasInit = false, reverse = false, gateLogits = false;
  int64_t inner = 1, vec = 1, steps = 1, warps = 1, logRank = 0;
  std::vector<std::string> args;
  std::vector<int64_t> shape;
  // mmrec.gated_recurrence(_grad) kernels.
  std::string publicName;
  bool perHead = false;
  int64_t channels = 0, heads = 1, rows = 1, threads = 0, sharedBytes = 0;
  bool cooperative = false;
  int64_t channelsPerBlock = 0;
  bool ticket = true; // a GPU scan kernel takes an atomic ticket (else blockIdx.x)
  bool gated() const { return op.rfind("gated_recurrence", 0) == 0; }
};

std::string dtypeOf(Type t) {
  if (t.isF32()) return "f32";
  if (t.isBF16()) return "bf16";
  if (t.isF16()) return "f16";
  if (t.isF64()) return "f64";
  return "?";
}

KernelInfo parseInfo(Attribute a) {
  auto d = llvm::cast<DictionaryAttr>(a);
  KernelInfo k;
  k.name = d.getAs<StringAttr>("name").str();
  k.op = d.getAs<StringAttr>("op").str();
  k.target = d.getAs<StringAttr>("target").str();
  k.dtype = dtypeOf(d.getAs<TypeAttr>("element_type").getValue());
  k.hasInit = d.getAs<BoolAttr>("has_init").getValue();
  for (Attribute s : d.getAs<ArrayAttr>("args"))
    k.args.push_back(llvm::cast<StringAttr>(s).str());
  if (k.gated()) {
    k.publicName = d.getAs<StringAttr>("public_name").str();
    k.perHead = d.getAs<BoolAttr>("per_head").getValue();
    k.channels = d.getAs<IntegerAttr>("channels").getInt();
    k.heads = d.getAs<IntegerAttr>("heads").getInt();
    k.rows = d.getAs<IntegerAttr>("rows").getInt();
    k.threads = d.getAs<IntegerAttr>("threads").getInt();
    k.sharedBytes = d.getAs<IntegerAttr>("shared_bytes").getInt();
    k.cooperative = d.getAs<BoolAttr>("cooperative").getValue();
    k.channelsPerBlock = d.getAs<IntegerAttr>("channels_per_block").getInt();
    return k;
  }
  k.reverse = d.getAs<BoolAttr>("reverse").getValue();
  k.gateLogits = d.getAs<BoolAttr>("gate_logits").getValue();
  k.inner = d.getAs<IntegerAttr>("inner").getInt();
  k.vec = d.getAs<IntegerAttr>("vec").getInt();
  k.steps = d.getAs<IntegerAttr>("steps").getInt();
  k.warps = d.getAs<IntegerAttr>("warps").getInt();
  k.logRank = d.getAs<IntegerAttr>("log_rank").getInt();
  if (auto sb = d.getAs<IntegerAttr>("shared_bytes"))
    k.sharedBytes = sb.getInt();
  if (auto t = d.getAs<BoolAttr>("ticket"))
    k.ticket = t.getValue();
  for (int64_t v : d.getAs<DenseI64ArrayAttr>("shape").asArrayRef())
    k.shape.push_back(v);
  return k;
}

bool isLogArg(const std::string &a) { return a == "log_decay" || a == "grad_log_decay"; }
bool isStateArg(const std::string &a) {
  return a == "init" || a == "final" || a == "grad_final" || a == "grad_init";
}
bool isOutputArg(const std::string &a, const std::string &op) {
  return (op == "scan" && (a == "h" || a == "final")) ||
         (a.rfind("grad_", 0) == 0 && a != "grad_h" && a != "grad_final");
}

std::string cIdent(const std::string &s) { return s == "final" ? "final_" : s; }

/// The arrays a caller passes to a gated kernel: the op's operands and
/// results (the kernel's grad_pre/grad_pre0 are launcher workspace; W_g's
/// and b_g's gradients are products computed from them).
std::vector<std::string> gatedPublicArgs(const KernelInfo &k) {
  std::vector<std::string> a;
  for (const std::string &n : k.args) {
    if (n == "grad_pre") {
      a.push_back("grad_gate");
      a.push_back("grad_bias");
    } else if (n != "grad_pre0" && n != "sync" && n != "pact" && n != "pact0" && n != "gbuf") {
      a.push_back(n);
    }
  }
  return a;
}

bool isGatedOutput(const std::string &a, const std::string &op) {
  if (op == "gated_recurrence")
    return a == "h" || a == "final";
  return a.rfind("grad_", 0) == 0 && a != "grad_h" && a != "grad_final";
}

/// The launch function of a gated kernel.
void emitGatedLaunch(llvm::raw_ostream &os, const KernelInfo &k, const std::string &modelName,
                     bool haveCpu, bool haveGpu, const std::vector<KernelInfo> &gpuVariants) {
  const bool adj = k.op == "gated_recurrence_grad";
  const int64_t D = k.channels, H = k.heads, dh = D / H;
  std::vector<std::string> pub = gatedPublicArgs(k);
  os << "void " << k.name << "(";
  for (const std::string &a : pub)
    os << "const TensorRef &" << cIdent(a) << ", ";
  os << "mmrec::rt::Stream stream) {\n"
     << "  const char *K = \"" << k.name << "\";\n"
     << "  if (z.shape.size() != 3)\n"
     << "    fail(K, \"argument 'z' must have rank 3 (batch, T, " << D << "), got shape \" + z.shapeString());\n"
     << "  const int64_t B = z.shape[0], T = z.shape[1];\n"
     << "  const std::vector<int64_t> seqShape{B, T, " << D << "}, stateShape{B, " << D
     << "}, biasShape{" << D << "};\n"
     << "  const std::vector<int64_t> gateShape = " << (k.perHead ? "{" + std::to_string(H) + ", " +
                                                             std::to_string(dh) + ", " +
                                                             std::to_string(dh) + "}"
                                                       : "{" + std::to_string(D) + ", " +
                                                             std::to_string(D) + "}")
     << ";\n";
  for (const std::string &a : pub) {
    std::string shape = a == "gate" || a == "grad_gate" ? "gateShape"
                        : a == "bias" || a == "grad_bias" ? "biasShape"
                        : a == "init" || a == "final" || a == "grad_final" || a == "grad_init"
                            ? "stateShape"
                            : "seqShape";
    std::string dt = isLogArg(a) ? "f32" : k.dtype;
    os << "  mmrec::rt::checkArg(K, \"" << a << "\", " << cIdent(a) << ", DType::" << dt << ", "
       << shape << ");\n";
  }
  os << "  const auto device = z.device;\n";
  for (const std::string &a : pub)
    os << "  if (" << cIdent(a) << ".device != device)\n    fail(K, \"argument '" << a
       << "' is on another device than 'z'\");\n";
  if (adj)
    os << "  if (B == 0) return;\n"
       << "  if (T == 0) { // no step: dh0 = dfinal, no gradient for W_g and b_g\n"
       << (k.hasInit ? "    copyState(grad_init, &grad_final);\n" : "")
       << "    copyState(grad_gate, nullptr);\n    copyState(grad_bias, nullptr);\n"
       << "    return;\n  }\n";
  else
    os << "  if (B == 0) return;\n"
       << "  if (T == 0) { // no step: the final state is the initial one\n"
       << "    copyState(final_, " << (k.hasInit ? "&init" : "nullptr") << ");\n"
       << "    return;\n  }\n";
  os << "  [[maybe_unused]] const DType et = DType::" << k.dtype << ";\n"
     << "  [[maybe_unused]] const size_t es = mmrec::rt::dtypeSize(et);\n";
  // dW and db from grad_pre (k = B·T rows, h as stored) and grad_pre0 (the
  // t = 0 terms, against init).
  auto products = [&](const char *dev, const char *pre, const char *pre0, const char *ones) {
    os << "  {\n    mmrec::rt::GemmDesc d;\n";
    if (k.perHead)
      os << "    d.m = " << dh << "; d.n = " << dh << "; d.batch = " << H << ";\n"
         << "    d.strideA = " << dh << "; d.strideB = " << dh << "; d.strideC = " << dh * dh
         << "; d.ldc = " << dh << ";\n";
    else
      os << "    d.m = " << D << "; d.n = " << D << "; d.ldc = " << D << ";\n";
    os << "    d.transA = true; d.lda = " << D << "; d.ldb = " << D << ";\n"
       << "    d.k = B * T; d.beta = 0;\n"
       << "    mmrec::rt::gemm(d, et, h.data, " << pre << ", et, grad_gate.data, " << dev
       << ", stream);\n";
    if (k.hasInit)
      os << "    d.k = B; d.beta = 1;\n"
         << "    mmrec::rt::gemm(d, et, init.data, " << pre0 << ", et, grad_gate.data, " << dev
         << ", stream);\n";
    os << "    mmrec::rt::GemmDesc e;\n"
       << "    e.m = 1; e.n = " << D << "; e.k = B * T; e.lda = B * T; e.ldb = " << D
       << "; e.ldc = " << D << "; e.beta = 0;\n"
       << "    mmrec::rt::gemm(e, et, " << ones << ", " << pre << ", et, grad_bias.data, " << dev
       << ", stream);\n"
       << "    e.k = B; e.lda = B; e.beta = 1;\n"
       << "    mmrec::rt::gemm(e, et, " << ones << ", " << pre0 << ", et, grad_bias.data, " << dev
       << ", stream);\n  }\n";
  };
  os << "  if (device == mmrec::rt::DeviceKind::cpu) {\n";
  if (haveCpu) {
    std::string call = "mmrec_cpu_" + modelName + "_" + k.name;
    if (adj) {
      os << "    std::vector<unsigned char> pre(size_t(B) * T * " << D << " * es), pre0(size_t(B) * "
         << D << " * es), ones(size_t(B) * T * es);\n"
         << "    fillOnes(ones.data(), et, B * T);\n"
         << "    " << call << "(";
      for (const std::string &a : k.args) {
        std::string v = a == "grad_pre" ? "pre.data()" : a == "grad_pre0" ? "pre0.data()"
                                                                          : cIdent(a) + ".data";
        std::string n = a == "grad_pre" ? "B * T * " + std::to_string(D)
                        : a == "grad_pre0" ? "B * " + std::to_string(D)
                                           : cIdent(a) + ".numel()";
        os << v << ", " << v << ", 0, " << n << ", 1, ";
      }
      os << "B, T);\n";
      products("mmrec::rt::DeviceKind::cpu", "pre.data()", "pre0.data()", "ones.data()");
    } else {
      os << "    " << call << "(";
      for (const std::string &a : k.args)
        os << cIdent(a) << ".data, " << cIdent(a) << ".data, 0, " << cIdent(a) << ".numel(), 1, ";
      os << "B, T);\n";
    }
    os << "    return;\n";
  } else {
    os << "    fail(K, \"this model was compiled without the cpu target\");\n";
  }
  os << "  }\n";
  if (!haveGpu) {
    os << "  fail(K, \"this model was compiled without the nvptx target\");\n}\n\n";
    return;
  }
  os << "#if MMREC_HAVE_CUDA\n";
  const KernelInfo *coop = nullptr;
  for (const KernelInfo &v : gpuVariants)
    if (v.cooperative)
      coop = &v;
  if (gpuVariants.empty()) {
    os << "  fail(K, \"no GPU kernel: W_g's block of " << dh
       << " channels does not fit in shared memory\");\n";
  } else if (coop) {
    // The dense gate's cooperative kernel: D / Dc blocks, a grid barrier a
    // step. The adjoint runs in chunks of at most 128 steps from the end:
    // before each, one product gives the chunk's pre-activations
    // pact[b, t − lo] = h_{t-1}·W_g, so the workspace holds one chunk.
    // Workspace: [sync | pact0 | gbuf | grad_pre | grad_pre0 | pact].
    const KernelInfo &v = *coop;
    const std::string grid = std::to_string(D / v.channelsPerBlock);
    // sync: the grid barrier's counter, then (tensor-core kernels) the bf16
    // exchange of GatedKernelSpec::coopSyncWords.
    os << "  const int64_t syncWords = 64 + B * " << D
       << ";\n  const size_t syncBytes = size_t(syncWords) * 4;\n";
    if (adj) {
      os << "  const size_t stateF32 = (size_t(B) * " << D << " * 4 + 255) / 256 * 256;\n"
         << "  const int64_t cap = std::min<int64_t>(T, 128);\n"
         << "  const size_t preBytes = (size_t(B) * T * " << D << " * es + 255) / 256 * 256;\n"
         << "  const size_t pre0Bytes = (size_t(B) * " << D << " * es + 255) / 256 * 256;\n"
         << "  const size_t wsBytes = syncBytes + 2 * stateF32 + preBytes + pre0Bytes + "
            "size_t(B) * cap * "
         << D << " * 4;\n"
         << "  char *ws = static_cast<char *>(mmrec::rt::gpu::threadWorkspace().get(wsBytes, "
            "syncBytes + stateF32, stream));\n"
         << "  void *sync = ws, *pact0 = ws + syncBytes, *gbuf = ws + syncBytes + stateF32;\n"
         << "  void *pre = ws + syncBytes + 2 * stateF32, *pre0 = static_cast<char *>(pre) + "
            "preBytes;\n"
         << "  void *pact = static_cast<char *>(pre0) + pre0Bytes;\n";
      if (k.hasInit)
        os << "  {\n    // pact0 = init·W_g (zeros without init).\n"
           << "    mmrec::rt::GemmDesc d;\n"
           << "    d.m = B; d.n = " << D << "; d.k = " << D << "; d.lda = " << D << "; d.ldb = " << D
           << "; d.ldc = " << D << ";\n"
           << "    mmrec::rt::gemm(d, et, init.data, gate.data, DType::f32, pact0, "
              "mmrec::rt::DeviceKind::gpu, stream);\n  }\n";
    } else {
      os << "  void *sync = mmrec::rt::gpu::threadWorkspace().get(syncBytes, syncBytes, stream);\n";
    }
    os << "  MemRef1D m[] = {";
    for (const std::string &a : v.args) {
      if (a == "grad_pre")
        os << "{pre, pre, 0, B * T * " << D << ", 1}, ";
      else if (a == "grad_pre0")
        os << "{pre0, pre0, 0, B * " << D << ", 1}, ";
      else if (a == "sync")
        os << "{sync, sync, 0, syncWords, 1}, ";
      else if (a == "pact")
        os << "{pact, pact, 0, B * cap * " << D << ", 1}, ";
      else if (a == "pact0" || a == "gbuf")
        os << "{" << a << ", " << a << ", 0, B * " << D << ", 1}, ";
      else
        os << "memref(" << cIdent(a) << "), ";
    }
    os << "};\n";
    // GatedKernelSpec::coopGroups(B), in the generated code.
    using Spec = mlir::mmrec::GatedKernelSpec;
    const std::string coopGroups =
        llvm::formatv("std::min<int64_t>((B + {0}) / {1}, {2})", Spec::kCoopGroupRows - 1,
                      Spec::kCoopGroupRows, Spec::kCoopMaxGroups)
            .str();
    std::string launch = "  mmrec::rt::gpu::launchCooperative(\"" + v.name +
                         "\", gpuModule().function(\"" + v.name + "\"), " + grid +
                         ", " + coopGroups + ", " +
                         std::to_string(v.threads) + ", " + std::to_string(v.sharedBytes) +
                         ", stream, params.data());\n";
    if (!adj) {
      os << "  int64_t dims[2] = {B, T};\n"
         << "  std::vector<void *> params = kernelParams(m, " << v.args.size() << ", dims, 2);\n"
         << launch;
    } else {
      os << "  for (int64_t hi = T; hi > 0;) {\n"
         << "    const int64_t lo = std::max<int64_t>(hi - cap, 0), t0 = std::max<int64_t>(lo, 1);\n"
         << "    if (hi > t0) { // pact[b, t − lo] = h[b, t − 1]·W_g for t in [t0, hi)\n"
         << "      mmrec::rt::GemmDesc d;\n"
         << "      d.m = hi - t0; d.n = " << D << "; d.k = " << D << "; d.lda = " << D
         << "; d.ldb = " << D << "; d.ldc = " << D << ";\n"
         << "      d.batch = B; d.strideA = T * " << D << "; d.strideB = 0; d.strideC = cap * " << D
         << ";\n"
         << "      mmrec::rt::gemm(d, et, static_cast<const char *>(h.data) + size_t(t0 - 1) * " << D
         << " * es, gate.data, DType::f32, static_cast<char *>(pact) + size_t(t0 - lo) * " << D
         << " * 4, mmrec::rt::DeviceKind::gpu, stream);\n    }\n"
         << "    mmrec::rt::gpu::threadWorkspace().get(wsBytes, syncBytes, stream); // counter := 0\n"
         << "    int64_t dims[5] = {B, T, lo, hi, cap};\n"
         << "    std::vector<void *> params = kernelParams(m, " << v.args.size() << ", dims, 5);\n  "
         << launch << "    hi = lo;\n  }\n";
      products("mmrec::rt::DeviceKind::gpu", "pre", "pre0", "onesOnDevice(et, B * T)");
    }
  } else {
    // Rows per block: enough blocks to fill the device twice, then taller ones.
    os << "  const int64_t sms = mmrec::rt::gpu::multiprocessorCount();\n"
       << "  const int64_t work = B * " << H << ";\n"
       << "  int rows = 1;\n";
    for (const KernelInfo &v : gpuVariants)
      if (v.rows > 1)
        os << "  if (work > " << (v.rows == 2 ? 2 : 4) << " * sms) rows = " << v.rows << ";\n";
    os << "  const char *fnName = nullptr;\n  int threads = 0;\n  size_t smem = 0;\n";
    for (const KernelInfo &v : gpuVariants)
      os << "  if (rows == " << v.rows << ") { fnName = \"" << v.name << "\"; threads = "
         << v.threads << "; smem = " << v.sharedBytes << "; }\n";
    os << "  const int64_t blocks = (B + rows - 1) / rows * " << H << ";\n";
    if (adj)
      os << "  const size_t preBytes = (size_t(B) * T * " << D << " * es + 255) / 256 * 256;\n"
         << "  char *ws = static_cast<char *>(mmrec::rt::gpu::threadWorkspace().get(preBytes + "
            "size_t(B) * "
         << D << " * es, 0, stream));\n"
         << "  void *pre = ws, *pre0 = ws + preBytes;\n"
         << "  const void *ones = onesOnDevice(et, B * T);\n";
    os << "  MemRef1D m[] = {";
    for (const std::string &a : k.args) {
      if (a == "grad_pre")
        os << "{pre, pre, 0, B * T * " << D << ", 1}, ";
      else if (a == "grad_pre0")
        os << "{pre0, pre0, 0, B * " << D << ", 1}, ";
      else
        os << "memref(" << cIdent(a) << "), ";
    }
    os << "};\n"
       << "  int64_t dims[2] = {B, T};\n"
       << "  std::vector<void *> params = kernelParams(m, " << k.args.size() << ", dims, 2);\n"
       << "  mmrec::rt::gpu::launch(fnName, gpuModule().function(fnName), blocks, threads, smem, "
          "stream, params.data());\n";
    if (adj)
      products("mmrec::rt::DeviceKind::gpu", "pre", "pre0", "ones");
  }
  os << "#else\n  fail(K, \"this build of the runtime has no CUDA support\");\n#endif\n}\n\n";
}

} // namespace

LogicalResult mlir::mmrec::emitLaunchApi(ModuleOp module, const CompileOptions &opts,
                                         const KernelImages &images, ArrayAttr gpuKernels,
                                         ArrayAttr cpuKernels) {
  // One public kernel per scan: the CPU list names them; GPU variants add
  // "_v1" scalar versions that the launcher selects.
  std::vector<KernelInfo> kernels;
  ArrayAttr primary = cpuKernels ? cpuKernels : gpuKernels;
  if (primary)
    for (Attribute a : primary) {
      KernelInfo k = parseInfo(a);
      auto endsWith = [&](StringRef suffix) { return StringRef(k.name).ends_with(suffix); };
      if (endsWith("_v1") || endsWith("_long"))
        continue;
      if (k.gated()) {
        if (llvm::any_of(kernels, [&](const KernelInfo &o) { return o.name == k.publicName; }))
          continue;
        k.name = k.publicName;
      }
      kernels.push_back(k);
    }
  auto gpuInfo = [&](const std::string &name) -> std::optional<KernelInfo> {
    if (!gpuKernels)
      return std::nullopt;
    for (Attribute a : gpuKernels) {
      KernelInfo k = parseInfo(a);
      if (k.name == name)
        return k;
    }
    return std::nullopt;
  };

  std::string ns = opts.name;
  for (char &c : ns)
    if (!isalnum(static_cast<unsigned char>(c)))
      c = '_';
  std::string h, cpp;
  {
    llvm::raw_string_ostream os(h);
    os << "// Generated by mmrec-compile from a model file: do not edit.\n"
       << "// One launch function per kernel; shapes and dtypes are checked at launch\n"
       << "// and a mismatch throws mmrec::rt::Error naming the kernel and argument.\n"
       << "#pragma once\n#include \"mmrec/runtime.h\"\n\n"
       << "namespace mmrec::gen::" << ns << " {\n\n";
    for (const KernelInfo &k : kernels) {
      if (k.gated()) {
        const bool adj = k.op == "gated_recurrence_grad";
        os << "/// " << (adj ? "Adjoint" : "Forward") << " of a mmrec.gated_recurrence ("
           << k.dtype << ", D = " << k.channels << ", "
           << (k.perHead ? std::to_string(k.heads) + " heads of " +
                               std::to_string(k.channels / k.heads)
                         : std::string("dense W_g"))
           << (k.hasInit ? ", with init" : "") << ").\n/// Arrays: ";
        std::vector<std::string> pub = gatedPublicArgs(k);
        for (size_t i = 0; i < pub.size(); ++i)
          os << (i ? ", " : "") << pub[i] << (isGatedOutput(pub[i], k.op) ? " (out)" : "");
        os << ".\nvoid " << k.name << "(";
        for (const std::string &a : pub)
          os << "const mmrec::rt::TensorRef &" << cIdent(a) << ", ";
        os << "mmrec::rt::Stream stream = nullptr);\n\n";
        continue;
      }
      os << "/// " << (k.op == "scan" ? "Forward" : "Adjoint") << " of a mmrec.scan ("
         << k.dtype << (k.hasInit ? ", with init" : "") << (k.reverse ? ", reverse" : "")
         << (k.inner > 1 ? ", decay broadcast over " + std::to_string(k.inner) + " channels" : "")
         << (k.gateLogits ? ", log_decay holds gate logits x: ℓ = clamp(log σ(x))" : "")
         << ").\n/// Arrays: ";
      for (size_t i = 0; i < k.args.size(); ++i)
        os << (i ? ", " : "") << k.args[i] << (isOutputArg(k.args[i], k.op) ? " (out)" : "");
      os << ".\nvoid " << k.name << "(";
      for (const std::string &a : k.args)
        os << "const mmrec::rt::TensorRef &" << cIdent(a) << ", ";
      os << "mmrec::rt::Stream stream = nullptr);\n\n";
    }
    os << "/// Names of the kernels this file provides.\nextern const char *const kKernelNames[];\n"
       << "extern const int kNumKernels;\n\n} // namespace mmrec::gen::" << ns << "\n";
  }
  {
    llvm::raw_string_ostream os(cpp);
    os << "// Generated by mmrec-compile: do not edit.\n#include \"" << opts.name << ".h\"\n\n"
       << (llvm::any_of(kernels, [](const KernelInfo &k) { return k.gated(); })
               ? "#include \"mmrec/blas.h\"\n\n"
               : "")
       << "#include <algorithm>\n#include <cstdint>\n#include <cstring>\n#include <string>\n#include <vector>\n\n"
       << "using mmrec::rt::DType;\nusing mmrec::rt::TensorRef;\n\n";
    if (cpuKernels) {
      os << "extern \"C\" {\n";
      for (const KernelInfo &k : kernels) {
        os << "void mmrec_cpu_" << opts.name << "_" << k.name << "(";
        for (size_t i = 0; i < k.args.size(); ++i)
          os << "void *, void *, int64_t, int64_t, int64_t, ";
        os << (k.gated() ? "int64_t, int64_t);\n" : "int64_t, int64_t, int64_t);\n");
      }
      os << "}\n\n";
    }
    os << "namespace {\n";
    bool haveGpu = gpuKernels && !images.ptx.empty();
    if (haveGpu) {
      os << "#if MMREC_HAVE_CUDA\nconst char kPtx[] = R\"mmrecptx(" << images.ptx
         << ")mmrecptx\";\n";
      if (!images.cubin.empty()) {
        os << "const unsigned char kCubin[] = {";
        for (size_t i = 0; i < images.cubin.size(); ++i)
          os << (i % 24 ? "" : "\n  ") << unsigned(static_cast<unsigned char>(images.cubin[i]))
             << ",";
        os << "\n};\nconst size_t kCubinSize = sizeof(kCubin);\n";
      } else {
        os << "const unsigned char *kCubin = nullptr;\nconst size_t kCubinSize = 0;\n";
      }
      os << "mmrec::rt::gpu::Module &gpuModule() {\n"
         << "  static mmrec::rt::gpu::Module m(\"" << opts.name
         << "\", kCubin, kCubinSize, kPtx);\n  return m;\n}\n#endif\n";
    }
    os << R"cpp(
struct MemRef1D {
  void *alloc, *aligned;
  int64_t offset, size, stride;
};
MemRef1D memref(const TensorRef &t) { return {t.data, t.data, 0, t.numel(), 1}; }
/// cuLaunchKernel's parameters: the fields of n memref descriptors, then nd
/// index arguments.
[[maybe_unused]] std::vector<void *> kernelParams(MemRef1D *m, size_t n, int64_t *dims, size_t nd) {
  std::vector<void *> p;
  for (size_t i = 0; i < n; ++i)
    p.insert(p.end(), {&m[i].alloc, &m[i].aligned, &m[i].offset, &m[i].size, &m[i].stride});
  for (size_t i = 0; i < nd; ++i)
    p.push_back(&dims[i]);
  return p;
}
[[noreturn]] void fail(const char *kernel, const std::string &msg) {
  throw mmrec::rt::Error(std::string(kernel) + ": " + msg);
}
/// dst = *src (same bytes), or zeros without src; on dst's device.
[[maybe_unused]] void copyState(const TensorRef &dst, const TensorRef *src) {
  const size_t bytes = size_t(dst.numel()) * mmrec::rt::dtypeSize(dst.dtype);
  if (dst.device == mmrec::rt::DeviceKind::cpu) {
    if (src) std::memcpy(dst.data, src->data, bytes);
    else std::memset(dst.data, 0, bytes);
    return;
  }
  if (src) mmrec::rt::gpu::copyDeviceToDevice(dst.data, src->data, bytes);
  else mmrec::rt::gpu::memsetD8(dst.data, 0, bytes);
}
/// n ones of dtype t at p (the row vector that sums rows in a product).
[[maybe_unused]] void fillOnes(void *p, DType t, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (t == DType::f32) { float f = 1.0f; std::memcpy(static_cast<char *>(p) + 4 * i, &f, 4); }
    else { uint16_t h = t == DType::bf16 ? 0x3f80 : 0x3c00; std::memcpy(static_cast<char *>(p) + 2 * i, &h, 2); }
  }
}
#if MMREC_HAVE_CUDA
/// n ones of dtype t on the device (grown and refilled when n grows).
[[maybe_unused]] const void *onesOnDevice(DType t, int64_t n) {
  thread_local void *ptr[5] = {};
  thread_local int64_t have[5] = {};
  int k = int(t);
  if (have[k] < n) {
    if (ptr[k]) mmrec::rt::gpu::free(ptr[k]);
    int64_t len = std::max<int64_t>(n, 1 << 16);
    std::vector<unsigned char> host(size_t(len) * mmrec::rt::dtypeSize(t));
    fillOnes(host.data(), t, len);
    ptr[k] = mmrec::rt::gpu::alloc(host.size());
    mmrec::rt::gpu::copyToDevice(ptr[k], host.data(), host.size());
    have[k] = len;
  }
  return ptr[k];
}
#endif
} // namespace
)cpp";
    os << "\nnamespace mmrec::gen::" << ns << " {\n\n";
    for (const KernelInfo &k : kernels) {
      if (k.gated()) {
        std::vector<KernelInfo> variants;
        if (gpuKernels)
          for (Attribute a : gpuKernels) {
            KernelInfo v = parseInfo(a);
            if (v.gated() && v.publicName == k.name)
              variants.push_back(v);
          }
        emitGatedLaunch(os, k, opts.name, bool(cpuKernels), haveGpu, variants);
        continue;
      }
      std::string seq = k.op == "scan" ? "b" : "h";
      os << "void " << k.name << "(";
      for (const std::string &a : k.args)
        os << "const TensorRef &" << cIdent(a) << ", ";
      os << "mmrec::rt::Stream stream) {\n"
         << "  const char *K = \"" << k.name << "\";\n"
         << "  const TensorRef &seq = " << seq << ";\n"
         << "  if (seq.shape.size() != " << k.shape.size() << ")\n"
         << "    fail(K, \"argument '" << seq << "' must have rank " << k.shape.size()
         << ", got shape \" + seq.shapeString());\n";
      for (size_t i = 0; i < k.shape.size(); ++i)
        if (k.shape[i] >= 0)
          os << "  if (seq.shape[" << i << "] != " << k.shape[i] << ")\n"
             << "    fail(K, \"argument '" << seq << "' dimension " << i << " must be "
             << k.shape[i] << " (from the model), got shape \" + seq.shapeString());\n";
      os << "  const int64_t B = seq.shape[0], T = seq.shape[1];\n"
         << "  int64_t N = 1;\n  for (size_t i = 2; i < seq.shape.size(); ++i) N *= seq.shape[i];\n"
         << "  std::vector<int64_t> full = seq.shape, state = seq.shape;\n"
         << "  state.erase(state.begin() + 1);\n"
         << "  std::vector<int64_t> logShape(seq.shape.begin(), seq.shape.begin() + "
         << k.logRank << ");\n";
      for (const std::string &a : k.args) {
        std::string shape = isLogArg(a) ? "logShape" : isStateArg(a) ? "state" : "full";
        std::string dt = isLogArg(a) ? "f32" : k.dtype;
        os << "  mmrec::rt::checkArg(K, \"" << a << "\", " << cIdent(a) << ", DType::" << dt
           << ", " << shape << ");\n";
      }
      os << "  const auto device = seq.device;\n";
      for (const std::string &a : k.args)
        os << "  if (" << cIdent(a) << ".device != device)\n    fail(K, \"argument '" << a
           << "' is on another device than '" << seq << "'\");\n";
      os << "  if (B == 0 || N == 0) return;\n";
      // No step: final = init (zeros without), grad_init = grad_final.
      if (k.op == "scan")
        os << "  if (T == 0) { copyState(final_, " << (k.hasInit ? "&init" : "nullptr")
           << "); return; }\n";
      else
        os << "  if (T == 0) { " << (k.hasInit ? "copyState(grad_init, &grad_final); " : "")
           << "return; }\n";
      os << "  if (device == mmrec::rt::DeviceKind::cpu) {\n";
      if (cpuKernels) {
        os << "    mmrec_cpu_" << opts.name << "_" << k.name << "(";
        for (const std::string &a : k.args)
          os << cIdent(a) << ".data, " << cIdent(a) << ".data, 0, " << cIdent(a)
             << ".numel(), 1, ";
        os << "B, T, N);\n    return;\n";
      } else {
        os << "    fail(K, \"this model was compiled without the cpu target\");\n";
      }
      os << "  }\n";
      std::optional<KernelInfo> g = gpuInfo(k.name), g1 = gpuInfo(k.name + "_v1");
      if (haveGpu && g) {
        os << "#if MMREC_HAVE_CUDA\n";
        os << "  bool vec = N % " << g->vec << " == 0"
           << (g->inner > 1 ? " && " + std::to_string(g->inner) + " % " + std::to_string(g->vec) +
                                  " == 0"
                            : std::string())
           << ";\n";
        for (const std::string &a : k.args)
          os << "  vec = vec && reinterpret_cast<uintptr_t>(" << cIdent(a)
             << ".data) % 16 == 0;\n";
        KernelInfo v1 = g1 ? *g1 : *g;
        std::optional<KernelInfo> gl = gpuInfo(k.name + "_long");
        // Few channel tiles and many steps: the long-block variant.
        if (gl)
          os << "  const bool longer = vec && N % " << gl->vec << " == 0 && T >= 8192 && B * N <= 16384;\n";
        else
          os << "  const bool longer = false;\n";
        KernelInfo L = gl ? *gl : *g;
        os << "  const int64_t cb = longer ? " << 32 * L.vec << " : vec ? " << 32 * g->vec << " : "
           << 32 * v1.vec << ";\n"
           << "  const int64_t cl = longer ? " << L.steps * L.warps << " : vec ? "
           << g->steps * g->warps << " : " << v1.steps * v1.warps << ";\n"
           << "  const int threads = longer ? " << 32 * L.warps << " : vec ? " << 32 * g->warps
           << " : " << 32 * v1.warps << ";\n"
           << "  const int64_t tiles = (N + cb - 1) / cb, chunks = (T + cl - 1) / cl;\n"
           << "  const int64_t blocks = B * tiles * chunks;\n"
           << "  // The ticket counter (zeroed; none where the kernels place their blocks\n"
           << "  // by blockIdx.x), and a 16-byte status word per (batch, chunk, channel)\n"
           << "  // tagged with this launch's epoch.\n"
           << (g->ticket || v1.ticket || L.ticket
                   ? "  char *ws = static_cast<char *>(mmrec::rt::gpu::threadWorkspace().get(256, "
                     "256, stream));\n"
                   : "  char *ws = nullptr;\n")
           << "  TensorRef wsRef{ws, DType::i32, device, {64}};\n"
           << "  const size_t statusBytes = size_t(16) * B * chunks * N;\n"
           << "  const mmrec::rt::gpu::TaggedBuffer st = "
              "mmrec::rt::gpu::threadScanStatus(statusBytes, stream);\n"
           << "  TensorRef statusRef{st.ptr, DType::i32, device, {int64_t(statusBytes / 4)}};\n"
           << "  MemRef1D m[] = {";
        for (const std::string &a : k.args)
          os << "memref(" << cIdent(a) << "), ";
        os << "memref(wsRef), memref(statusRef)};\n"
           << "  int64_t dims[4] = {B, T, N, int64_t(st.epoch)};\n"
           << "  std::vector<void *> params = kernelParams(m, " << k.args.size() + 2
           << ", dims, 4);\n"
           << "  const char *fnName = longer ? \"" << L.name << "\" : vec ? \"" << g->name
           << "\" : \"" << v1.name << "\";\n"
           << "  const size_t smem = longer ? " << L.sharedBytes << " : vec ? " << g->sharedBytes
           << " : " << v1.sharedBytes << ";\n"
           << "  mmrec::rt::gpu::launch(fnName, gpuModule().function(fnName), blocks, threads, smem, "
              "stream, params.data());\n";
        os << "#else\n  fail(K, \"this build of the runtime has no CUDA support\");\n#endif\n";
      } else {
        os << "  fail(K, \"this model was compiled without the nvptx target\");\n";
      }
      os << "}\n\n";
    }
    os << "const char *const kKernelNames[] = {";
    for (const KernelInfo &k : kernels)
      os << "\"" << k.name << "\", ";
    os << "nullptr};\nconst int kNumKernels = " << kernels.size() << ";\n\n} // namespace mmrec::gen::"
       << ns << "\n";
  }

  // The manifest.
  llvm::json::Array list;
  auto add = [&](ArrayAttr attrs) {
    if (!attrs)
      return;
    for (Attribute a : attrs) {
      KernelInfo k = parseInfo(a);
      llvm::json::Array args, shape;
      for (auto &s : k.args)
        args.push_back(s);
      for (int64_t v : k.shape)
        shape.push_back(v);
      list.push_back(llvm::json::Object{
          {"name", k.name}, {"op", k.op}, {"target", k.target}, {"dtype", k.dtype},
          {"has_init", k.hasInit}, {"reverse", k.reverse}, {"inner", k.inner},
          {"gate_logits", k.gateLogits},
          {"vec", k.vec}, {"steps", k.steps}, {"warps", k.warps}, {"log_rank", k.logRank},
          {"args", std::move(args)}, {"shape", std::move(shape)}});
    }
  };
  add(cpuKernels);
  add(gpuKernels);
  llvm::json::Object manifest{{"name", opts.name},
                              {"arch", opts.arch},
                              {"has_cubin", !images.cubin.empty()},
                              {"kernels", std::move(list)}};

  auto write = [&](const std::string &file, StringRef data) -> LogicalResult {
    SmallString<256> path(opts.outDir);
    llvm::sys::path::append(path, file);
    std::error_code ec;
    llvm::raw_fd_ostream os(path, ec);
    if (ec) {
      llvm::errs() << "error: cannot write " << path << ": " << ec.message() << "\n";
      return failure();
    }
    os << data;
    return success();
  };
  std::string json;
  {
    llvm::raw_string_ostream os(json);
    os << llvm::formatv("{0:2}", llvm::json::Value(std::move(manifest))) << "\n";
  }
  if (failed(write(opts.name + ".h", h)) || failed(write(opts.name + ".cpp", cpp)) ||
      failed(write(opts.name + ".manifest.json", json)))
    return failure();
  if (!images.ptx.empty() && failed(write(opts.name + ".ptx", images.ptx)))
    return failure();
  if (!images.cubin.empty() &&
      failed(write(opts.name + ".cubin", StringRef(images.cubin.data(), images.cubin.size()))))
    return failure();
  if (!images.ptxasLog.empty() && failed(write(opts.name + ".ptxas.log", images.ptxasLog)))
    return failure();
  if (!images.cpuObject.empty() &&
      failed(write(opts.name + ".cpu.o",
                   StringRef(images.cpuObject.data(), images.cpuObject.size()))))
    return failure();
  return success();
}

//===----------------------------------------------------------------------===//
// The training library
//===----------------------------------------------------------------------===//

static LogicalResult writeBytes(const std::string &path, llvm::StringRef bytes) {
  std::error_code ec;
  llvm::raw_fd_ostream os(path, ec, llvm::sys::fs::OF_None);
  if (ec) {
    llvm::errs() << "error: cannot write " << path << ": " << ec.message() << "\n";
    return failure();
  }
  os << bytes;
  return success();
}

/// Links `obj` into the shared library `out` with the system's C compiler
/// driver.
static LogicalResult linkShared(const std::string &obj, const std::string &out) {
  auto cc = llvm::sys::findProgramByName("cc");
  if (!cc) {
    llvm::errs() << "error: linking " << out << " needs a C compiler driver ('cc') on PATH\n";
    return failure();
  }
  llvm::SmallVector<llvm::StringRef> argv = {*cc, "-shared", "-o", out, obj, "-lm"};
  std::string err;
  if (llvm::sys::ExecuteAndWait(*cc, argv, std::nullopt, {}, 0, 0, &err) != 0) {
    llvm::errs() << "error: linking " << out << " failed" << (err.empty() ? "" : ": ") << err
                 << "\n";
    return failure();
  }
  return success();
}

/// The GPU training library: the `train_*` host functions of
/// mmrec-build-train-kernels{target=nvptx}, their launches outlined into
/// kernels lowered to PTX (math functions expanded to polynomials, so no
/// libdevice is needed) and embedded in the host object, which calls the
/// mgpu* entry points of mmrec's runtime.
static LogicalResult emitGpuTrainLibrary(ModuleOp module, const CompileOptions &opts,
                                         const std::string &base, std::string *llvmIR,
                                         std::string *gatedKernels = nullptr) {
  OwningOpRef<ModuleOp> clone = module.clone();
  if (failed(runPipeline(*clone, opts.trainGatedCluster
                                     ? "mmrec-build-train-kernels{target=nvptx gated-bf16=true "
                                       "gated-cluster=true}"
                                 : opts.trainGatedBf16
                                     ? "mmrec-build-train-kernels{target=nvptx gated-bf16=true}"
                                     : "mmrec-build-train-kernels{target=nvptx}")))
    return failure();
  auto kernels = (*clone)->getAttrOfType<ArrayAttr>("mmrec.train_kernels");
  if (auto kind = (*clone)->getAttrOfType<StringAttr>("mmrec.train_gated_kernels");
      kind && gatedKernels)
    *gatedKernels = kind.getValue().str();
  OwningOpRef<ModuleOp> gm = ModuleOp::create(clone->getLoc());
  (*gm)->setAttr(gpu::GPUDialect::getContainerModuleAttrName(), UnitAttr::get(module.getContext()));
  for (Attribute a : kernels) {
    auto f = clone->lookupSymbol<func::FuncOp>(llvm::cast<DictionaryAttr>(a).getAs<StringAttr>("name"));
    f->remove();
    gm->getBody()->push_back(f);
  }
  // The runtime functions the host code calls (mmrecGemmF32: cuBLASLt
  // products, runtime/src/cuda.cpp), resolved when the library is loaded.
  for (auto f : llvm::make_early_inc_range(clone->getOps<func::FuncOp>()))
    if (f.isDeclaration()) {
      f->remove();
      gm->getBody()->push_back(f);
    }
  // Kernels built directly as gpu.func (the level-0 recurrence's persistent
  // and cooperative kernels) live in gpu.modules of their own.
  for (auto g : llvm::make_early_inc_range(clone->getOps<gpu::GPUModuleOp>())) {
    g->remove();
    gm->getBody()->push_back(g);
  }
  std::string toNvvm = llvm::formatv(
      "gpu-kernel-outlining,nvvm-attach-target{{chip={0} O=3},"
      "gpu.module(mmrec-approximate-math{{ptx=true},convert-math-to-llvm,convert-scf-to-cf,convert-gpu-to-nvvm,"
      "convert-nvvm-to-llvm,canonicalize,cse),reconcile-unrealized-casts",
      opts.arch);
  if (failed(runGpuPipeline(*gm, toNvvm, "isa")))
    return failure();
  // Every kernel must be self-contained: an external function (a libdevice
  // __nv_* call, say) would fail when the driver loads the image.
  for (auto bin : gm->getOps<gpu::BinaryOp>())
    for (Attribute o : bin.getObjects()) {
      StringRef ptx = llvm::cast<gpu::ObjectAttr>(o).getObject().getValue();
      size_t at = ptx.find(".extern .func");
      if (at != StringRef::npos) {
        llvm::errs() << "error: GPU training kernel '" << bin.getName()
                     << "' calls an external function: " << ptx.substr(at, ptx.find('\n', at) - at)
                     << "\n";
        return failure();
      }
    }
  // --check-spills: the level-0 kernels (gpu.module train_gated_kernels and
  // the pre-activation product train_gated_bwd_pact) are assembled with
  // ptxas and must not use local memory; their log goes to
  // NAME.train.gpu.ptxas.log. (The other training kernels keep per-thread
  // scratch arrays in local memory by design.)
  if (opts.checkSpills && !llvmIR) {
    std::string log;
    for (auto bin : gm->getOps<gpu::BinaryOp>()) {
      if (bin.getName() != "train_gated_kernels" && bin.getName() != "train_gated_bwd_pact")
        continue;
      std::vector<char> cubin;
      std::string one;
      StringRef ptx = llvm::cast<gpu::ObjectAttr>(bin.getObjects()[0]).getObject().getValue();
      FailureOr<bool> assembled = runPtxas(ptx.str(), opts.arch, cubin, one);
      if (failed(assembled))
        return failure();
      if (!*assembled) {
        llvm::errs() << "error: --check-spills needs ptxas (not found on PATH or in "
                        "/usr/local/cuda/bin)\n";
        return failure();
      }
      log += one;
    }
    if (failed(writeBytes(base + ".gpu.ptxas.log", log)) || failed(checkPtxasLog(log)))
      return failure();
  }
  if (failed(runPipeline(*gm, "arith-expand{include-bf16=true},convert-scf-to-cf,"
                              "expand-strided-metadata,finalize-memref-to-llvm,"
                              "convert-arith-to-llvm,convert-cf-to-llvm,gpu-to-llvm,"
                              "convert-func-to-llvm,reconcile-unrealized-casts")))
    return failure();
  std::vector<char> object;
  if (failed(lowerCpuModule(*gm, opts, object, llvmIR, /*lowered=*/true)))
    return failure();
  if (llvmIR)
    return success();
  if (failed(writeBytes(base + ".gpu.o", llvm::StringRef(object.data(), object.size()))))
    return failure();
  return linkShared(base + ".gpu.o", base + ".gpu.so");
}

LogicalResult mlir::mmrec::emitTrainLibrary(ModuleOp module, const CompileOptions &opts,
                                            std::string *llvmIR) {
  auto cfg = module->getAttrOfType<ConfigAttr>(MMRecDialect::getConfigAttrName());
  if (!cfg) {
    module.emitError() << "the training library needs a module with '"
                       << MMRecDialect::getConfigAttrName() << "'";
    return failure();
  }
  OwningOpRef<ModuleOp> clone = module.clone();
  if (failed(runPipeline(*clone, "mmrec-build-train-kernels")))
    return failure();
  auto kernels = (*clone)->getAttrOfType<ArrayAttr>("mmrec.train_kernels");
  OwningOpRef<ModuleOp> cpu = ModuleOp::create(clone->getLoc());
  llvm::json::Array list;
  for (Attribute a : kernels) {
    auto d = llvm::cast<DictionaryAttr>(a);
    auto name = d.getAs<StringAttr>("name");
    auto f = clone->lookupSymbol<func::FuncOp>(name);
    f->remove();
    cpu->getBody()->push_back(f);
    auto strings = [&](StringRef key) {
      llvm::json::Array out;
      for (Attribute s : d.getAs<ArrayAttr>(key))
        out.push_back(llvm::cast<StringAttr>(s).getValue().str());
      return out;
    };
    list.push_back(llvm::json::Object{{"name", name.getValue().str()},
                                      {"arrays", strings("arrays")},
                                      {"indices", strings("indices")}});
  }
  std::vector<char> object;
  if (failed(lowerCpuModule(*cpu, opts, object, llvmIR)))
    return failure();
  if (llvmIR)
    return success();
  std::string base = opts.outDir + "/" + opts.name + ".train";
  if (failed(writeBytes(base + ".o", llvm::StringRef(object.data(), object.size()))))
    return failure();
  // Shared libraries the trainer opens at run time (dlopen).
  if (failed(linkShared(base + ".o", base + ".so")))
    return failure();
  std::string gated; // the GPU library's level-0 kernels (gatedGpuKernels)
  if (opts.nvptx && failed(emitGpuTrainLibrary(module, opts, base, nullptr, &gated)))
    return failure();
  // What was asked for and does not apply at this shape is said, not dropped
  // silently (the library falls back to the kernels it names).
  const bool bf16Kernels = StringRef(gated).ends_with("-bf16");
  if (opts.nvptx && opts.trainGatedCluster && gated != "clusters-bf16")
    llvm::errs() << "mmrec-compile: note: " << opts.name
                 << ": --train-gated-cluster applies to a dense gate with D a multiple of 256 up "
                    "to 1024 (D = "
                 << cfg.getHiddenDim() << "); the level-0 kernels are " << gated << "\n";
  else if (opts.nvptx && opts.trainGatedBf16 && !bf16Kernels)
    llvm::errs() << "mmrec-compile: note: " << opts.name
                 << ": --train-gated-bf16 applies to the dense gate's cooperative kernels with D "
                    "a multiple of 256 (D = "
                 << cfg.getHiddenDim() << "); the level-0 kernels are " << gated << ", in fp32\n";
  llvm::json::Object config{
      {"name", cfg.getName().str()},
      {"vocab_size", cfg.getVocabSize()},
      {"hidden_dim", cfg.getHiddenDim()},
      {"num_layers", cfg.getNumLayers()},
      {"num_heads", cfg.getNumHeads()},
      {"num_memories", cfg.getNumMemories()},
      {"memory_size", cfg.getMemorySize()},
      {"ffn_dim", cfg.getFfnDim()},
      {"chunk_size", cfg.getChunkSize()},
      {"max_seq_len", cfg.getMaxSeqLen()},
      {"decay_rank", cfg.getDecayRank()},
      {"gate", cfg.getGate() == GateKind::dense ? "dense" : "per_head"},
      {"decay_init", cfg.getDecayInit().convertToDouble()},
      {"log_clamp_min", cfg.getLogClampMin().convertToDouble()},
      {"log_clamp_max", cfg.getLogClampMax().convertToDouble()},
      {"norm_eps", cfg.getNormEps().convertToDouble()},
      {"param_count", cfg.getParamCount()},
  };
  llvm::json::Object manifest{{"name", opts.name},
                              {"library", opts.name + ".train.so"},
                              {"gpu_library", opts.nvptx ? llvm::json::Value(opts.name + ".train.gpu.so")
                                                         : llvm::json::Value(nullptr)},
                              // How the GPU library's level-0 kernels multiply by
                              // W_g and which they are (informational; mmrec-compile
                              // --train-gated-bf16, --train-gated-cluster).
                              {"gpu_gated_products",
                               opts.nvptx ? llvm::json::Value(bf16Kernels ? "bf16" : "fp32")
                                          : llvm::json::Value(nullptr)},
                              {"gpu_gated_kernels",
                               opts.nvptx ? llvm::json::Value(gated) : llvm::json::Value(nullptr)},
                              {"config", std::move(config)},
                              {"kernels", std::move(list)}};
  std::string json;
  llvm::raw_string_ostream js(json);
  js << llvm::formatv("{0:2}", llvm::json::Value(std::move(manifest))) << "\n";
  return writeBytes(base + ".json", json);
}
