// The kops kernels, one list for the CPU and the CUDA code: name, code and smoothness at 0.
//
// The code is the kernel's `Kernel.code` in kops/kernels.py (the table every backend reads);
// the Python backends pass it with the kernel's scale to the private native ops. `smooth`
// says whether f is differentiable at u = 0 (the Laplacian is not: its gradient at
// coincident points is the symmetric subgradient 0, with a noise floor in the GEMM trick).
// tests/test_kernel_table.py checks this list, and the Triton profile branches, against the
// Python table. Adding a kernel: a row here, its profile (value and derivative) next to the
// others in csrc/cpu/kmv_impl.h, csrc/cuda/kmv_kernels.cuh and kops/backends/triton_kernels.py,
// and its class in kops/kernels.py. The dispatch switches are generated from this list.
#pragma once

#include <cstdint>

//          name       code  smooth
#define KOPS_FOR_EACH_KERNEL(X) \
  X(Gaussian, 0, true)          \
  X(Laplacian, 1, false)        \
  X(Matern32, 2, true)          \
  X(Matern52, 3, true)          \
  X(Cauchy, 4, true)

namespace kops {

enum KernelCode : int {
#define KOPS_KERNEL_ENUM(name, code, smooth) k##name = code,
  KOPS_FOR_EACH_KERNEL(KOPS_KERNEL_ENUM)
#undef KOPS_KERNEL_ENUM
};

#define KOPS_KERNEL_COUNT(name, code, smooth) +1
constexpr int kNumKernels = 0 KOPS_FOR_EACH_KERNEL(KOPS_KERNEL_COUNT);
#undef KOPS_KERNEL_COUNT

// Codes are dense, 0 .. kNumKernels - 1 (the test checks).
constexpr bool valid_kernel_code(int64_t code) { return code >= 0 && code < kNumKernels; }

constexpr bool kernel_smooth_at_zero(int64_t code) {
#define KOPS_KERNEL_SMOOTH(name, c, smooth) \
  if (code == c) return smooth;
  KOPS_FOR_EACH_KERNEL(KOPS_KERNEL_SMOOTH)
#undef KOPS_KERNEL_SMOOTH
  return true;
}

}  // namespace kops
