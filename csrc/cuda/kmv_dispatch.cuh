// Host-side launch logic of the CUDA kernel products (torch-free): pick the compile-time variant
// (dtype, kernel, padded d, column chunk), size the grid, launch, report errors.
//
// The variants are instantiated in separate translation units (kmv_f32.cu, kmv_f64.cu,
// kmv_grad_f32.cu, kmv_grad_f64.cu) so that a build compiles them in parallel; each unit
// instantiates all of its variants, so compiling it alone (as scripts/check_cuda_sources.sh
// does) compile-checks and spill-checks them. kmv_launch.cu holds the public entry points.
#pragma once

#include <atomic>
#include <cmath>
#include <type_traits>

#include "kmv_kernels.cuh"
#include "kmv_plan.h"

namespace kops {
namespace cuda {
namespace detail {

// Per-dtype entry points, one per translation unit. With `query` non-null they only store the
// workspace the launch wants in *query.
cudaError_t kmv_f32(KernelKind kernel, const KmvProblem& p, cudaStream_t stream, int64_t* query);
cudaError_t kmv_f64(KernelKind kernel, const KmvProblem& p, cudaStream_t stream, int64_t* query);
cudaError_t grad_f32(KernelKind kernel, const KmvGradProblem& p, cudaStream_t stream,
                     int64_t* query);
cudaError_t grad_f64(KernelKind kernel, const KmvGradProblem& p, cudaStream_t stream,
                     int64_t* query);

// Compiled buckets of the padded feature dimension D >= d (a larger D than d costs registers,
// i.e. fewer rows per thread, not work: the distance loop stops after the guarded steps that
// cover d). float64, the accuracy path rather than the speed path, has fewer buckets.
template <typename T>
struct DimBuckets;
template <>
struct DimBuckets<float> {
  template <typename F>
  static cudaError_t dispatch(int64_t d, F&& f) {
    if (d <= 3) return f(std::integral_constant<int, 3>());
    if (d <= 4) return f(std::integral_constant<int, 4>());
    if (d <= 8) return f(std::integral_constant<int, 8>());
    if (d <= 16) return f(std::integral_constant<int, 16>());
    if (d <= 32) return f(std::integral_constant<int, 32>());
    return f(std::integral_constant<int, 64>());
  }
};
template <>
struct DimBuckets<double> {
  template <typename F>
  static cudaError_t dispatch(int64_t d, F&& f) {
    if (d <= 4) return f(std::integral_constant<int, 4>());
    if (d <= 16) return f(std::integral_constant<int, 16>());
    return f(std::integral_constant<int, 64>());
  }
};

// Streaming multiprocessors of the current device (cached per device).
inline cudaError_t multiprocessors(int* out) {
  static std::atomic<int> cache[64];
  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  if (dev >= 0 && dev < 64) {
    const int cached = cache[dev].load(std::memory_order_relaxed);
    if (cached > 0) {
      *out = cached;
      return cudaSuccess;
    }
  }
  int sms = 0;
  err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (err != cudaSuccess) return err;
  if (dev >= 0 && dev < 64) cache[dev].store(sms, std::memory_order_relaxed);
  *out = sms;
  return cudaSuccess;
}

// Resident blocks per SM of one kernel variant. Variant is the launcher's own template, so each
// variant gets its own cache (kernels of one dtype share a function-pointer type, so a cache
// keyed on that type would mix them up); devices of one architecture are assumed.
template <typename Variant, typename Kernel>
cudaError_t blocks_per_sm(Kernel kernel, int* out) {
  static std::atomic<int> cached{0};
  int value = cached.load(std::memory_order_relaxed);
  if (value <= 0) {
    cudaError_t err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&value, kernel, kThreads, 0);
    if (err != cudaSuccess) return err;
    if (value < 1) value = 1;
    cached.store(value, std::memory_order_relaxed);
  }
  *out = value;
  return cudaSuccess;
}

template <typename T, KernelKind K, int D, int CC, int Kind>  // Kind: RFORCE, -1 for gradients
struct VariantTag {};

// Adds the partial sums of a split launch to the output, in split order.
template <typename T>
cudaError_t launch_reduce(const T* partial, int64_t splits, int64_t n, int64_t c, T* out,
                          int64_t ors, int64_t ocs, int sms, cudaStream_t stream) {
  const int64_t total = n * c;
  int64_t blocks = (total + kThreads - 1) / kThreads;
  if (blocks > int64_t(sms) * 16) blocks = int64_t(sms) * 16;
  reduce_splits<T><<<unsigned(blocks), kThreads, 0, stream>>>(partial, splits, n, c, out, ors, ocs);
  return cudaGetLastError();
}

template <typename T, KernelKind K, int D, int CC, int RFORCE = 0>
cudaError_t launch_kmv(const KmvProblem& p, cudaStream_t stream, int64_t* query) {
  constexpr int R = RFORCE > 0 ? RFORCE : detail::rows_per_thread<T, D, CC>();
  constexpr int TZ = detail::tile_points<T, D, CC>();
  auto kernel = detail::kmv_kernel<T, K, D, CC, RFORCE>;
  const int64_t row_blocks = (p.n + int64_t(kThreads) * R - 1) / (int64_t(kThreads) * R);
  const int64_t col_chunks = (p.c + CC - 1) / CC;
  if (row_blocks > 2147483647LL || col_chunks > 65535) return cudaErrorInvalidValue;
  int sms = 0, per_sm = 0;
  cudaError_t err = multiprocessors(&sms);
  if (err != cudaSuccess) return err;
  err = blocks_per_sm<VariantTag<T, K, D, CC, RFORCE>>(kernel, &per_sm);
  if (err != cudaSuccess) return err;
  const int64_t available = query ? -1 : (p.workspace ? p.workspace_bytes : 0);
  const Plan plan = plan_splits(row_blocks * col_chunks, p.m, TZ, sms, per_sm, p.n * p.c,
                                int(sizeof(T)), available);
  if (query) {
    *query = plan.workspace;
    return cudaSuccess;
  }
  T* partial = plan.splits > 1 ? static_cast<T*>(p.workspace) : nullptr;
  const dim3 grid{unsigned(row_blocks), unsigned(col_chunks), unsigned(plan.splits)};
  kernel<<<grid, kThreads, 0, stream>>>(
      static_cast<const T*>(p.x), p.x_row_stride, p.x_col_stride,
      static_cast<const T*>(p.z), p.z_row_stride, p.z_col_stride,
      static_cast<const T*>(p.v), p.v_row_stride, p.v_col_stride,
      static_cast<T*>(p.out), p.out_row_stride, p.out_col_stride, partial,
      p.n, p.m, int(p.d), p.c, plan.per_split,
      T(detail::profile_coef<T>(K, p.scale)), T(p.alpha));
  err = cudaGetLastError();
  if (err != cudaSuccess || partial == nullptr) return err;
  return launch_reduce<T>(partial, plan.splits, p.n, p.c, static_cast<T*>(p.out),
                          p.out_row_stride, p.out_col_stride, sms, stream);
}

template <typename T, KernelKind K, int CC>
cudaError_t kmv_by_dim(const KmvProblem& p, cudaStream_t stream, int64_t* query) {
  return DimBuckets<T>::dispatch(p.d, [&](auto dim) {
    return launch_kmv<T, K, decltype(dim)::value, CC>(p, stream, query);
  });
}

// c == 1 (a vector) has its own variant; wider v runs in register chunks of 16 columns (the
// columns of a partial chunk are skipped in steps of 4), chunks beyond the first over gridDim.y.
template <typename T, KernelKind K>
cudaError_t kmv_by_cols(const KmvProblem& p, cudaStream_t stream, int64_t* query) {
  if (p.c == 1) return kmv_by_dim<T, K, 1>(p, stream, query);
  return kmv_by_dim<T, K, 16>(p, stream, query);
}

// The one-row-per-thread baseline (float32, c == 1, Gaussian and Laplacian; D in {3, 16, 64}),
// selected by KmvProblem::one_row_per_thread, to measure what register blocking gains.
template <typename T, KernelKind K>
cudaError_t kmv_baseline(const KmvProblem& p, cudaStream_t stream, int64_t* query) {
  if (p.d <= 3) return launch_kmv<T, K, 3, 1, 1>(p, stream, query);
  if (p.d <= 16) return launch_kmv<T, K, 16, 1, 1>(p, stream, query);
  return launch_kmv<T, K, 64, 1, 1>(p, stream, query);
}

template <typename T>
cudaError_t kmv_by_kernel(KernelKind kernel, const KmvProblem& p, cudaStream_t stream,
                          int64_t* query) {
  if (p.one_row_per_thread) {
    if constexpr (sizeof(T) == 4) {
      if (p.c != 1) return cudaErrorInvalidValue;
      if (kernel == KernelKind::kGaussian)
        return kmv_baseline<T, KernelKind::kGaussian>(p, stream, query);
      if (kernel == KernelKind::kLaplacian)
        return kmv_baseline<T, KernelKind::kLaplacian>(p, stream, query);
    }
    return cudaErrorInvalidValue;
  }
  switch (kernel) {
#define KOPS_CASE(name, code, smooth) \
    case k##name: return kmv_by_cols<T, k##name>(p, stream, query);
    KOPS_FOR_EACH_KERNEL(KOPS_CASE)
#undef KOPS_CASE
  }
  return cudaErrorInvalidValue;
}

// ------------------------------------------------------------------------------ gradients
template <typename T, KernelKind K, int D, int CC>
cudaError_t launch_grad(const KmvGradProblem& p, cudaStream_t stream, int64_t* query) {
  constexpr int R = detail::grad_rows_per_thread<T, D, CC>();
  constexpr int TZ = detail::tile_points<T, D, CC>();
  auto kernel = detail::kmv_grad_kernel<T, K, D, CC>;
  const int64_t row_blocks = (p.n + int64_t(kThreads) * R - 1) / (int64_t(kThreads) * R);
  if (row_blocks > 2147483647LL) return cudaErrorInvalidValue;
  int sms = 0, per_sm = 0;
  cudaError_t err = multiprocessors(&sms);
  if (err != cudaSuccess) return err;
  err = blocks_per_sm<VariantTag<T, K, D, CC, -1>>(kernel, &per_sm);
  if (err != cudaSuccess) return err;
  const int64_t available = query ? -1 : (p.workspace ? p.workspace_bytes : 0);
  const Plan plan = plan_splits(row_blocks, p.m, TZ, sms, per_sm, p.n * p.d, int(sizeof(T)),
                                available);
  if (query) {
    *query = plan.workspace;
    return cudaSuccess;
  }
  T* partial = plan.splits > 1 ? static_cast<T*>(p.workspace) : nullptr;
  const dim3 grid{unsigned(row_blocks), 1u, unsigned(plan.splits)};
  kernel<<<grid, kThreads, 0, stream>>>(
      static_cast<const T*>(p.x), p.x_row_stride, p.x_col_stride,
      static_cast<const T*>(p.z), p.z_row_stride, p.z_col_stride,
      static_cast<const T*>(p.v), p.v_row_stride, p.v_col_stride,
      static_cast<const T*>(p.g), p.g_row_stride, p.g_col_stride,
      static_cast<T*>(p.gx), p.gx_row_stride, p.gx_col_stride, partial,
      p.n, p.m, int(p.d), int(p.c), plan.per_split,
      T(detail::profile_coef<T>(K, p.scale)), T(2.0 * p.scale * p.scale));
  err = cudaGetLastError();
  if (err != cudaSuccess || partial == nullptr) return err;
  return launch_reduce<T>(partial, plan.splits, p.n, p.d, static_cast<T*>(p.gx),
                          p.gx_row_stride, p.gx_col_stride, sms, stream);
}

// Gradients: D in {8, 32} and columns in chunks of 4 or 16 (c <= 16), to bound compile time.
template <typename T, KernelKind K, int CC>
cudaError_t grad_by_dim(const KmvGradProblem& p, cudaStream_t stream, int64_t* query) {
  if (p.d <= 8) return launch_grad<T, K, 8, CC>(p, stream, query);
  return launch_grad<T, K, 32, CC>(p, stream, query);
}

template <typename T, KernelKind K>
cudaError_t grad_by_cols(const KmvGradProblem& p, cudaStream_t stream, int64_t* query) {
  if (p.c <= 4) return grad_by_dim<T, K, 4>(p, stream, query);
  return grad_by_dim<T, K, 16>(p, stream, query);
}

template <typename T>
cudaError_t grad_by_kernel(KernelKind kernel, const KmvGradProblem& p, cudaStream_t stream,
                           int64_t* query) {
  switch (kernel) {
#define KOPS_CASE(name, code, smooth) \
    case k##name: return grad_by_cols<T, k##name>(p, stream, query);
    KOPS_FOR_EACH_KERNEL(KOPS_CASE)
#undef KOPS_CASE
  }
  return cudaErrorInvalidValue;
}

}  // namespace detail
}  // namespace cuda
}  // namespace kops
