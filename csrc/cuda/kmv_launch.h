// Host-side interface of the hand-written CUDA kernel products (no torch, no device code).
//
// Included by the torch binding (compiled by the host C++ compiler) and by the .cu files
// (compiled by nvcc), so it only declares plain structs and functions.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../kernel_codes.h"

namespace kops {
namespace cuda {

// Kernel profiles: the shared list of csrc/kernel_codes.h (the code is Kernel.code of
// kops/kernels.py, passed by kops/backends/cuda_native.py).
using KernelKind = kops::KernelCode;

enum class DType : int { Float32 = 0, Float64 = 1 };

// The largest feature dimension d of the register-blocked path (the rows of x live in registers).
constexpr int kMaxDim = 64;

// out[i, :] += alpha * sum_j k(x_i, z_j) v[j, :]; every array is described by a base pointer
// and element strides (int64, any layout; out's elements must not overlap). x, z, v and out all
// have the dtype `dtype`. scale is the kernel's input scale (1 / length), see kops/kernels.py.
struct KmvProblem {
  const void* x;
  int64_t x_row_stride, x_col_stride;
  const void* z;
  int64_t z_row_stride, z_col_stride;
  const void* v;
  int64_t v_row_stride, v_col_stride;
  void* out;
  int64_t out_row_stride, out_col_stride;
  int64_t n, m;
  int64_t d, c;
  double scale;
  double alpha;
  // Device scratch of at least kmv_workspace_bytes(...) bytes (may be null when that is 0). With
  // less, the launch does not split the z range (still correct, possibly slower for small n).
  void* workspace;
  int64_t workspace_bytes;
  // Benchmarking only: run the one-row-per-thread design (float32, c == 1, Gaussian or
  // Laplacian) instead of the register-blocked kernel.
  bool one_row_per_thread;
};

// Gradients of <g, K(x, z) v> with respect to x, added to gx (n, d):
//   gx_i = 2 scale^2 sum_j f'(u_ij) <g_i, v_j> (x_i - z_j),  u_ij = scale^2 |x_i - z_j|^2,
// which with the roles of (x, g) and (z, v) swapped also gives the gradient with respect to z.
// g is (n, c) with c <= kMaxGradCols and d <= kMaxGradDim; the result is ADDED to gx (n, d),
// whose elements must not overlap (zero it first for the plain gradient).
constexpr int kMaxGradCols = 16;
constexpr int kMaxGradDim = 32;
struct KmvGradProblem {
  const void* x;
  int64_t x_row_stride, x_col_stride;
  const void* z;
  int64_t z_row_stride, z_col_stride;
  const void* v;
  int64_t v_row_stride, v_col_stride;
  const void* g;
  int64_t g_row_stride, g_col_stride;
  void* gx;
  int64_t gx_row_stride, gx_col_stride;
  int64_t n, m;
  int64_t d, c;
  double scale;
  void* workspace;  // as in KmvProblem, sized by kmv_grad_workspace_bytes
  int64_t workspace_bytes;
};

// Launch on `stream`; returns cudaSuccess or the first CUDA error (invalid arguments give
// cudaErrorInvalidValue). Sizes of 0 are a no-op. Asynchronous like any kernel launch.
cudaError_t kmv_launch(KernelKind kernel, DType dtype, const KmvProblem& p, cudaStream_t stream);
cudaError_t kmv_grad_launch(KernelKind kernel, DType dtype, const KmvGradProblem& p,
                            cudaStream_t stream);

// The workspace a launch of this problem on the current device wants (0 when it does not split
// the z range). Queries the device (cached) but launches nothing.
cudaError_t kmv_workspace_bytes(KernelKind kernel, DType dtype, const KmvProblem& p,
                                int64_t* bytes);
cudaError_t kmv_grad_workspace_bytes(KernelKind kernel, DType dtype, const KmvGradProblem& p,
                                     int64_t* bytes);

}  // namespace cuda
}  // namespace kops
