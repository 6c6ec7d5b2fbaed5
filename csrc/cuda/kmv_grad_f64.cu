// Instantiates every float64 variant of the gradient kernel (see kmv_dispatch.cuh).
#include "kmv_dispatch.cuh"

namespace kops {
namespace cuda {
namespace detail {

cudaError_t grad_f64(KernelKind kernel, const KmvGradProblem& p, cudaStream_t stream,
                     int64_t* query) {
  return grad_by_kernel<double>(kernel, p, stream, query);
}

}  // namespace detail
}  // namespace cuda
}  // namespace kops
