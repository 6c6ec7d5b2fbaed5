// Public entry points of the CUDA kernel products (kmv_launch.h): validate, pick the dtype's
// translation unit. Torch-free.
#include <cmath>

#include "kmv_launch.h"

namespace kops {
namespace cuda {
namespace detail {
cudaError_t kmv_f32(KernelKind kernel, const KmvProblem& p, cudaStream_t stream, int64_t* query);
cudaError_t kmv_f64(KernelKind kernel, const KmvProblem& p, cudaStream_t stream, int64_t* query);
cudaError_t grad_f32(KernelKind kernel, const KmvGradProblem& p, cudaStream_t stream,
                     int64_t* query);
cudaError_t grad_f64(KernelKind kernel, const KmvGradProblem& p, cudaStream_t stream,
                     int64_t* query);
}  // namespace detail

namespace {
bool valid_scale(double scale) { return std::isfinite(scale) && scale > 0.0; }
bool valid_kernel(KernelKind kernel) { return valid_kernel_code(int(kernel)); }
}  // namespace

namespace {

// Shared by the launches and the workspace queries: validate, then pick the dtype's unit.
cudaError_t kmv_dispatch(KernelKind kernel, DType dtype, const KmvProblem& p, cudaStream_t stream,
                         int64_t* query) {
  if (query) *query = 0;
  if (p.n < 0 || p.m < 0 || p.c < 0 || p.d < 0 || p.d > kMaxDim || !valid_kernel(kernel))
    return cudaErrorInvalidValue;
  if (p.n == 0 || p.m == 0 || p.c == 0) return cudaSuccess;
  if (p.d == 0 || !valid_scale(p.scale)) return cudaErrorInvalidValue;
  if (dtype == DType::Float32) return detail::kmv_f32(kernel, p, stream, query);
  if (dtype == DType::Float64) return detail::kmv_f64(kernel, p, stream, query);
  return cudaErrorInvalidValue;
}

cudaError_t grad_dispatch(KernelKind kernel, DType dtype, const KmvGradProblem& p,
                          cudaStream_t stream, int64_t* query) {
  if (query) *query = 0;
  if (p.n < 0 || p.m < 0 || p.c < 0 || p.c > kMaxGradCols || p.d < 0 || p.d > kMaxGradDim ||
      !valid_kernel(kernel))
    return cudaErrorInvalidValue;
  if (p.n == 0 || p.m == 0 || p.c == 0 || p.d == 0) return cudaSuccess;
  if (!valid_scale(p.scale)) return cudaErrorInvalidValue;
  if (dtype == DType::Float32) return detail::grad_f32(kernel, p, stream, query);
  if (dtype == DType::Float64) return detail::grad_f64(kernel, p, stream, query);
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t kmv_launch(KernelKind kernel, DType dtype, const KmvProblem& p, cudaStream_t stream) {
  return kmv_dispatch(kernel, dtype, p, stream, nullptr);
}

cudaError_t kmv_grad_launch(KernelKind kernel, DType dtype, const KmvGradProblem& p,
                            cudaStream_t stream) {
  return grad_dispatch(kernel, dtype, p, stream, nullptr);
}

cudaError_t kmv_workspace_bytes(KernelKind kernel, DType dtype, const KmvProblem& p,
                                int64_t* bytes) {
  return kmv_dispatch(kernel, dtype, p, nullptr, bytes);
}

cudaError_t kmv_grad_workspace_bytes(KernelKind kernel, DType dtype, const KmvGradProblem& p,
                                     int64_t* bytes) {
  return grad_dispatch(kernel, dtype, p, nullptr, bytes);
}

}  // namespace cuda
}  // namespace kops
