// Instantiates every float32 variant of the kernel product (see kmv_dispatch.cuh).
#include "kmv_dispatch.cuh"

namespace kops {
namespace cuda {
namespace detail {

cudaError_t kmv_f32(KernelKind kernel, const KmvProblem& p, cudaStream_t stream, int64_t* query) {
  return kmv_by_kernel<float>(kernel, p, stream, query);
}

}  // namespace detail
}  // namespace cuda
}  // namespace kops
