// The GPU training library's level-0 kernels (GatedKernels.cpp's persistent
// and cooperative kernels) assemble
// with ptxas for sm_90 without spills or local memory: mmrec-compile
// --check-spills checks them and writes their log to NAME.train.gpu.ptxas.log.
// (The model files' own kernels link the toolkit's libdevice: CUDA_HOME names it.)
// REQUIRES: ptxas
// RUN: rm -rf %t && mkdir -p %t
// RUN: env CUDA_HOME=/usr/local/cuda mmrec-compile %models/mmrec-small.mlir -o %t --check-spills 2>&1 | FileCheck %s
// RUN: FileCheck %s --check-prefix=SMALL < %t/mmrec-small.train.gpu.ptxas.log
// RUN: not grep -E "[1-9][0-9]* bytes (stack frame|spill)" %t/mmrec-small.train.gpu.ptxas.log
// RUN: env CUDA_HOME=/usr/local/cuda mmrec-compile %models/mmrec-tiny.mlir -o %t --check-spills 2>/dev/null
// RUN: FileCheck %s --check-prefix=TINY < %t/mmrec-tiny.train.gpu.ptxas.log
// RUN: not grep -E "[1-9][0-9]* bytes (stack frame|spill)" %t/mmrec-tiny.train.gpu.ptxas.log
// CHECK: training library mmrec-small.train.so
// SMALL-DAG: Compiling entry function 'train_gated_fwd_coop' for 'sm_90'
// SMALL-DAG: Compiling entry function 'train_gated_bwd_coop' for 'sm_90'
// SMALL: 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
// TINY-DAG: Compiling entry function 'train_gated_fwd_r1' for 'sm_90'
// TINY-DAG: Compiling entry function 'train_gated_bwd_r4' for 'sm_90'
// --train-gated-bf16 (tensor-core products at D 768): no spills either; the
// manifest says which products the GPU library uses.
// RUN: env CUDA_HOME=/usr/local/cuda mmrec-compile %models/mmrec-small.mlir -o %t --name small-bf16 --train-gated-bf16 --check-spills 2>/dev/null
// RUN: FileCheck %s --check-prefix=BF16 < %t/small-bf16.train.gpu.ptxas.log
// RUN: not grep -E "[1-9][0-9]* bytes (stack frame|spill)" %t/small-bf16.train.gpu.ptxas.log
// RUN: FileCheck %s --check-prefix=MANIFEST < %t/small-bf16.train.json
// RUN: FileCheck %s --check-prefix=MANIFEST32 < %t/mmrec-small.train.json
// BF16-DAG: Compiling entry function 'train_gated_fwd_coop' for 'sm_90'
// BF16-DAG: Compiling entry function 'train_gated_bwd_coop' for 'sm_90'
// MANIFEST-DAG: "gpu_gated_products": "bf16"
// MANIFEST32-DAG: "gpu_gated_products": "fp32"
// MANIFEST-DAG: "gpu_gated_kernels": "cooperative-bf16"
// MANIFEST32-DAG: "gpu_gated_kernels": "cooperative"
// --train-gated-cluster (implies --train-gated-bf16): the row groups as
// clusters of 16 (GatedKernelSpec::groupCluster), no spills either.
// RUN: env CUDA_HOME=/usr/local/cuda mmrec-compile %models/mmrec-small.mlir -o %t --name small-gcl --train-gated-cluster --check-spills 2>/dev/null
// RUN: FileCheck %s --check-prefix=GCL < %t/small-gcl.train.gpu.ptxas.log
// RUN: not grep -E "[1-9][0-9]* bytes (stack frame|spill)" %t/small-gcl.train.gpu.ptxas.log
// RUN: FileCheck %s --check-prefix=GCLMANIFEST < %t/small-gcl.train.json
// GCL-DAG: Compiling entry function 'train_gated_fwd_gcl' for 'sm_90'
// GCL-DAG: Compiling entry function 'train_gated_bwd_gcl' for 'sm_90'
// GCLMANIFEST-DAG: "gpu_gated_products": "bf16"
// GCLMANIFEST-DAG: "gpu_gated_kernels": "clusters-bf16"
// Where it does not apply (mmrec-tiny: one block a head), the manifest says
// which kernels the library has, and mmrec-compile says so (a note).
// RUN: env CUDA_HOME=/usr/local/cuda mmrec-compile %models/mmrec-tiny.mlir -o %t --name tiny-gcl --train-gated-cluster 2>&1 | FileCheck %s --check-prefix=WARN
// RUN: FileCheck %s --check-prefix=TINYMANIFEST < %t/tiny-gcl.train.json
// WARN: mmrec-compile: note: tiny-gcl: --train-gated-cluster applies to a dense gate with D a multiple of 256 up to 1024 (D = 128); the level-0 kernels are persistent
// TINYMANIFEST-DAG: "gpu_gated_kernels": "persistent"
// TINYMANIFEST-DAG: "gpu_gated_products": "fp32"
