// Torch binding of the hand-written CUDA kernel products (csrc/cuda/kmv_kernels.cuh).
//
// Registers two private ops for the CUDA dispatch key, called by kops/backends/cuda_native.py:
//   kops::_cuda_kmv(Tensor(a!) out, Tensor x, Tensor z, Tensor v, int kernel, float scale,
//                   float alpha, bool one_row_per_thread=False) -> ()
//                                                         out += alpha * K(x, z) v
//     (one_row_per_thread: the unblocked baseline design, for benchmarks only)
//   kops::_cuda_kmv_grad(Tensor(a!) gx, Tensor x, Tensor z, Tensor v, Tensor g, int kernel,
//                        float scale) -> ()               gx += d<g, K(x, z) v>/dx
// `kernel` is the KernelKind number. Only light headers are included (no torch/extension.h).
#include <cmath>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "kmv_launch.h"

namespace {

using kops::cuda::DType;
using kops::cuda::KernelKind;

void check_matrix(const at::Tensor& t, const char* name, const at::Tensor& like) {
  TORCH_CHECK(t.dim() == 2, "kops._cuda: ", name, " must be 2-D, got ", t.dim(), " dimensions");
  TORCH_CHECK(t.is_cuda(), "kops._cuda: ", name, " must be a CUDA tensor, got ", t.device());
  TORCH_CHECK(t.device() == like.device(), "kops._cuda: ", name, " is on ", t.device(),
              " but x is on ", like.device());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), "kops._cuda: ", name, " has dtype ",
              t.scalar_type(), " but x has dtype ", like.scalar_type());
}

DType dtype_of(const at::Tensor& x) {
  if (x.scalar_type() == at::kFloat) return DType::Float32;
  TORCH_CHECK(x.scalar_type() == at::kDouble,
              "kops._cuda: only float32 and float64 are supported, got ", x.scalar_type());
  return DType::Float64;
}

KernelKind kernel_of(int64_t kernel) {
  TORCH_CHECK(kops::valid_kernel_code(kernel), "kops._cuda: unknown kernel code ", kernel,
              " (expected 0 .. ", kops::kNumKernels - 1, ", see csrc/kernel_codes.h)");
  return static_cast<KernelKind>(kernel);
}

// The result is written through its strides, so its elements must be distinct.
void check_writable(const at::Tensor& out, const char* name) {
  TORCH_CHECK(out.is_non_overlapping_and_dense(), "kops._cuda: ", name,
              " must be non-overlapping and dense");
}

// Scratch for the partial sums of a launch that splits the z range (from torch's caching
// allocator: freeing it right after the asynchronous launch is safe on the same stream).
at::Tensor workspace(int64_t bytes, const at::Tensor& like) {
  return bytes > 0 ? at::empty({bytes}, like.options().dtype(at::kByte)) : at::Tensor();
}

void cuda_kmv(const at::Tensor& out, const at::Tensor& x, const at::Tensor& z,
              const at::Tensor& v, int64_t kernel, double scale, double alpha,
              bool one_row_per_thread) {
  check_matrix(x, "x", x);
  check_matrix(z, "z", x);
  check_matrix(v, "v", x);
  check_matrix(out, "out", x);
  check_writable(out, "out");
  const DType dtype = dtype_of(x);
  const KernelKind kind = kernel_of(kernel);
  const int64_t n = x.size(0), d = x.size(1), m = z.size(0), c = v.size(1);
  TORCH_CHECK(z.size(1) == d, "kops._cuda: x has ", d, " columns but z has ", z.size(1));
  TORCH_CHECK(v.size(0) == m, "kops._cuda: z has ", m, " rows but v has ", v.size(0));
  TORCH_CHECK(out.size(0) == n && out.size(1) == c, "kops._cuda: out must have shape (", n,
              ", ", c, "), got ", out.sizes());
  TORCH_CHECK(d <= kops::cuda::kMaxDim, "kops._cuda: d = ", d, " exceeds the CUDA backend's ",
              "limit of ", kops::cuda::kMaxDim);
  TORCH_CHECK(std::isfinite(scale) && scale > 0.0, "kops._cuda: scale must be positive, got ",
              scale);
  if (n == 0 || m == 0 || c == 0) return;
  TORCH_CHECK(d > 0, "kops._cuda: d must be at least 1");

  const c10::cuda::CUDAGuard guard(x.device());
  kops::cuda::KmvProblem p{};
  p.x = x.data_ptr();
  p.x_row_stride = x.stride(0);
  p.x_col_stride = x.stride(1);
  p.z = z.data_ptr();
  p.z_row_stride = z.stride(0);
  p.z_col_stride = z.stride(1);
  p.v = v.data_ptr();
  p.v_row_stride = v.stride(0);
  p.v_col_stride = v.stride(1);
  p.out = out.data_ptr();
  p.out_row_stride = out.stride(0);
  p.out_col_stride = out.stride(1);
  p.n = n;
  p.m = m;
  p.d = d;
  p.c = c;
  p.scale = scale;
  p.alpha = alpha;
  p.one_row_per_thread = one_row_per_thread;
  TORCH_CHECK(!one_row_per_thread || (dtype == DType::Float32 && c == 1 && kernel <= 1),
              "kops._cuda: the one-row-per-thread baseline covers float32, c = 1, Gaussian and "
              "Laplacian only");
  int64_t bytes = 0;
  C10_CUDA_CHECK(kops::cuda::kmv_workspace_bytes(kind, dtype, p, &bytes));
  const at::Tensor scratch = workspace(bytes, x);
  p.workspace = bytes > 0 ? scratch.data_ptr() : nullptr;
  p.workspace_bytes = bytes;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.get_device()).stream();
  C10_CUDA_CHECK(kops::cuda::kmv_launch(kind, dtype, p, stream));
}

void cuda_kmv_grad(const at::Tensor& gx, const at::Tensor& x, const at::Tensor& z,
                   const at::Tensor& v, const at::Tensor& g, int64_t kernel, double scale) {
  check_matrix(x, "x", x);
  check_matrix(z, "z", x);
  check_matrix(v, "v", x);
  check_matrix(g, "g", x);
  check_matrix(gx, "gx", x);
  check_writable(gx, "gx");
  const DType dtype = dtype_of(x);
  const KernelKind kind = kernel_of(kernel);
  const int64_t n = x.size(0), d = x.size(1), m = z.size(0), c = v.size(1);
  TORCH_CHECK(z.size(1) == d, "kops._cuda: x has ", d, " columns but z has ", z.size(1));
  TORCH_CHECK(v.size(0) == m, "kops._cuda: z has ", m, " rows but v has ", v.size(0));
  TORCH_CHECK(g.size(0) == n && g.size(1) == c, "kops._cuda: g must have shape (", n, ", ", c,
              "), got ", g.sizes());
  TORCH_CHECK(gx.size(0) == n && gx.size(1) == d, "kops._cuda: gx must have shape (", n, ", ",
              d, "), got ", gx.sizes());
  TORCH_CHECK(d <= kops::cuda::kMaxGradDim && c <= kops::cuda::kMaxGradCols,
              "kops._cuda: the gradient kernel supports d <= ", kops::cuda::kMaxGradDim,
              " and c <= ", kops::cuda::kMaxGradCols, ", got d = ", d, ", c = ", c);
  TORCH_CHECK(std::isfinite(scale) && scale > 0.0, "kops._cuda: scale must be positive, got ",
              scale);
  if (n == 0 || m == 0 || c == 0 || d == 0) return;

  const c10::cuda::CUDAGuard guard(x.device());
  kops::cuda::KmvGradProblem p{};
  p.x = x.data_ptr();
  p.x_row_stride = x.stride(0);
  p.x_col_stride = x.stride(1);
  p.z = z.data_ptr();
  p.z_row_stride = z.stride(0);
  p.z_col_stride = z.stride(1);
  p.v = v.data_ptr();
  p.v_row_stride = v.stride(0);
  p.v_col_stride = v.stride(1);
  p.g = g.data_ptr();
  p.g_row_stride = g.stride(0);
  p.g_col_stride = g.stride(1);
  p.gx = gx.data_ptr();
  p.gx_row_stride = gx.stride(0);
  p.gx_col_stride = gx.stride(1);
  p.n = n;
  p.m = m;
  p.d = d;
  p.c = c;
  p.scale = scale;
  int64_t bytes = 0;
  C10_CUDA_CHECK(kops::cuda::kmv_grad_workspace_bytes(kind, dtype, p, &bytes));
  const at::Tensor scratch = workspace(bytes, x);
  p.workspace = bytes > 0 ? scratch.data_ptr() : nullptr;
  p.workspace_bytes = bytes;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.get_device()).stream();
  C10_CUDA_CHECK(kops::cuda::kmv_grad_launch(kind, dtype, p, stream));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(kops, m) {
  m.def("_cuda_kmv(Tensor(a!) out, Tensor x, Tensor z, Tensor v, int kernel, float scale, "
        "float alpha, bool one_row_per_thread=False) -> ()");
  m.def("_cuda_kmv_grad(Tensor(a!) gx, Tensor x, Tensor z, Tensor v, Tensor g, int kernel, "
        "float scale) -> ()");
}

TORCH_LIBRARY_IMPL(kops, CUDA, m) {
  m.impl("_cuda_kmv", &cuda_kmv);
  m.impl("_cuda_kmv_grad", &cuda_kmv_grad);
}
