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

namespace kops {
namespace cuda {
namespace detail {

// Per-dtype entry points, one per translation unit.
cudaError_t kmv_f32(KernelKind kernel, const KmvProblem& p, cudaStream_t stream);
cudaError_t kmv_f64(KernelKind kernel, const KmvProblem& p, cudaStream_t stream);
cudaError_t grad_f32(KernelKind kernel, const KmvGradProblem& p, cudaStream_t stream);
cudaError_t grad_f64(KernelKind kernel, const KmvGradProblem& p, cudaStream_t stream);

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

template <typename T, KernelKind K, int D, int CC, bool Grad>
struct VariantTag {};

// Splits of the z range so that the grid has about two full waves of blocks; each split keeps
// at least four tiles of z. Returns the z points per split (a multiple of the tile).
inline int64_t z_per_split(int64_t other_blocks, int64_t m, int tile, int sms, int per_sm) {
  const int64_t target = int64_t(2) * sms * per_sm;
  int64_t splits = (target + other_blocks - 1) / other_blocks;
  const int64_t tiles = (m + tile - 1) / tile;
  const int64_t max_splits = tiles / 4 > 1 ? tiles / 4 : 1;
  if (splits > max_splits) splits = max_splits;
  if (splits > 65535) splits = 65535;
  if (splits < 1) splits = 1;
  const int64_t tiles_per_split = (tiles + splits - 1) / splits;
  return tiles_per_split * tile;
}

template <typename T, KernelKind K, int D, int CC>
cudaError_t launch_kmv(const KmvProblem& p, cudaStream_t stream) {
  constexpr int R = detail::rows_per_thread<T, D, CC>();
  constexpr int TZ = detail::tile_points<T, D, CC>();
  auto kernel = detail::kmv_kernel<T, K, D, CC>;
  const int64_t row_blocks = (p.n + int64_t(kThreads) * R - 1) / (int64_t(kThreads) * R);
  const int64_t col_chunks = (p.c + CC - 1) / CC;
  if (row_blocks > 2147483647LL || col_chunks > 65535) return cudaErrorInvalidValue;
  int sms = 0, per_sm = 0;
  cudaError_t err = multiprocessors(&sms);
  if (err != cudaSuccess) return err;
  err = blocks_per_sm<VariantTag<T, K, D, CC, false>>(kernel, &per_sm);
  if (err != cudaSuccess) return err;
  const int64_t per_split = z_per_split(row_blocks * col_chunks, p.m, TZ, sms, per_sm);
  const int64_t splits = (p.m + per_split - 1) / per_split;
  const dim3 grid{unsigned(row_blocks), unsigned(col_chunks), unsigned(splits)};
  kernel<<<grid, kThreads, 0, stream>>>(
      static_cast<const T*>(p.x), p.x_row_stride, p.x_col_stride,
      static_cast<const T*>(p.z), p.z_row_stride, p.z_col_stride,
      static_cast<const T*>(p.v), p.v_row_stride, p.v_col_stride,
      static_cast<T*>(p.out), p.out_row_stride, p.out_col_stride,
      p.n, p.m, int(p.d), p.c, per_split,
      T(detail::profile_coef<T>(K, p.scale)), T(p.alpha));
  return cudaGetLastError();
}

template <typename T, KernelKind K, int CC>
cudaError_t kmv_by_dim(const KmvProblem& p, cudaStream_t stream) {
  return DimBuckets<T>::dispatch(p.d, [&](auto dim) {
    return launch_kmv<T, K, decltype(dim)::value, CC>(p, stream);
  });
}

// c == 1 (a vector) has its own variant; wider v runs in register chunks of 16 columns (the
// columns of a partial chunk are skipped in steps of 4), chunks beyond the first over gridDim.y.
template <typename T, KernelKind K>
cudaError_t kmv_by_cols(const KmvProblem& p, cudaStream_t stream) {
  if (p.c == 1) return kmv_by_dim<T, K, 1>(p, stream);
  return kmv_by_dim<T, K, 16>(p, stream);
}

template <typename T>
cudaError_t kmv_by_kernel(KernelKind kernel, const KmvProblem& p, cudaStream_t stream) {
  switch (kernel) {
    case KernelKind::Gaussian: return kmv_by_cols<T, KernelKind::Gaussian>(p, stream);
    case KernelKind::Laplacian: return kmv_by_cols<T, KernelKind::Laplacian>(p, stream);
    case KernelKind::Matern32: return kmv_by_cols<T, KernelKind::Matern32>(p, stream);
    case KernelKind::Matern52: return kmv_by_cols<T, KernelKind::Matern52>(p, stream);
  }
  return cudaErrorInvalidValue;
}

// ------------------------------------------------------------------------------ gradients
template <typename T, KernelKind K, int D, int CC>
cudaError_t launch_grad(const KmvGradProblem& p, cudaStream_t stream) {
  constexpr int R = detail::grad_rows_per_thread<T, D, CC>();
  constexpr int TZ = detail::tile_points<T, D, CC>();
  auto kernel = detail::kmv_grad_kernel<T, K, D, CC>;
  const int64_t row_blocks = (p.n + int64_t(kThreads) * R - 1) / (int64_t(kThreads) * R);
  if (row_blocks > 2147483647LL) return cudaErrorInvalidValue;
  int sms = 0, per_sm = 0;
  cudaError_t err = multiprocessors(&sms);
  if (err != cudaSuccess) return err;
  err = blocks_per_sm<VariantTag<T, K, D, CC, true>>(kernel, &per_sm);
  if (err != cudaSuccess) return err;
  const int64_t per_split = z_per_split(row_blocks, p.m, TZ, sms, per_sm);
  const int64_t splits = (p.m + per_split - 1) / per_split;
  const dim3 grid{unsigned(row_blocks), 1u, unsigned(splits)};
  kernel<<<grid, kThreads, 0, stream>>>(
      static_cast<const T*>(p.x), p.x_row_stride, p.x_col_stride,
      static_cast<const T*>(p.z), p.z_row_stride, p.z_col_stride,
      static_cast<const T*>(p.v), p.v_row_stride, p.v_col_stride,
      static_cast<const T*>(p.g), p.g_row_stride, p.g_col_stride,
      static_cast<T*>(p.gx), p.gx_row_stride, p.gx_col_stride,
      p.n, p.m, int(p.d), int(p.c), per_split,
      T(detail::profile_coef<T>(K, p.scale)), T(2.0 * p.scale * p.scale));
  return cudaGetLastError();
}

// Gradients: D in {8, 32} and columns in chunks of 4 or 16 (c <= 16), to bound compile time.
template <typename T, KernelKind K, int CC>
cudaError_t grad_by_dim(const KmvGradProblem& p, cudaStream_t stream) {
  if (p.d <= 8) return launch_grad<T, K, 8, CC>(p, stream);
  return launch_grad<T, K, 32, CC>(p, stream);
}

template <typename T, KernelKind K>
cudaError_t grad_by_cols(const KmvGradProblem& p, cudaStream_t stream) {
  if (p.c <= 4) return grad_by_dim<T, K, 4>(p, stream);
  return grad_by_dim<T, K, 16>(p, stream);
}

template <typename T>
cudaError_t grad_by_kernel(KernelKind kernel, const KmvGradProblem& p, cudaStream_t stream) {
  switch (kernel) {
    case KernelKind::Gaussian: return grad_by_cols<T, KernelKind::Gaussian>(p, stream);
    case KernelKind::Laplacian: return grad_by_cols<T, KernelKind::Laplacian>(p, stream);
    case KernelKind::Matern32: return grad_by_cols<T, KernelKind::Matern32>(p, stream);
    case KernelKind::Matern52: return grad_by_cols<T, KernelKind::Matern52>(p, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace detail
}  // namespace cuda
}  // namespace kops
