// Hand-written CUDA kernel products, torch-free (plain pointers, int64 sizes and strides).
//
//   kmv:   out_i += alpha * sum_j f(u_ij) v_j          u_ij = scale^2 |x_i - z_j|^2
//   grad:  gx_i  += 2 scale^2 sum_j f'(u_ij) <g_i, v_j> (x_i - z_j)
//
// Design (the exact "ieee" path for small and moderate d, d <= kMaxDim):
// - Each thread owns R rows of x, held in registers for the whole feature dimension (the
//   template parameter D >= d, padded with zeros; distance loops stop after the guarded steps
//   of 4 or 8 features that cover d, so a larger D costs registers, not work). A block of
//   kThreads = 128 threads owns 128 * R rows; R comes from a register budget
//   (rows_per_thread below), e.g. float32: R = 8 for D <= 8 and c = 1, 2 for D = 64.
// - Z (and V) are streamed through shared memory in tiles of TZ points. Every thread reads the
//   same z_j (a broadcast, no bank conflicts, 16-byte loads when the row length allows), and each
//   value it loads is used for R rows: this register blocking is what a one-row-per-thread design
//   lacks, where every z element costs one shared-memory load per pair.
// - Distances are direct differences of the raw inputs, sum_k (x_ik - z_jk)^2, multiplied once by
//   scale^2 (folded into the exponent's constant). A difference of two floats is exact to one
//   rounding of the difference itself, so no cancellation can occur (unlike the GEMM trick), and
//   it is at least as accurate as differencing pre-scaled, centred copies; x_i == z_j gives an
//   exact 0. (The only cost: (x - z)^2 overflows float32 for |x - z| > 1.8e19.)
// - float32 evaluates exp(-a) as 2^(-a log2 e) with log2(e) folded into the per-pair constant,
//   using ex2.approx.ftz (the instruction behind CUDA's exp2f, maximum error 2 ulp; the ftz form
//   is one MUFU.EX2 and flushes kernel values below 1.2e-38 to 0). Folding the constant adds one
//   rounding of the argument: a relative error of at most 6e-8 |ln k| in a kernel value k, which
//   relative to the output's scale (K @ |v|) is below 6e-8 max_k k |ln k| = 2.2e-8. Square roots
//   (Laplacian, Matern) are a * rsqrt.approx.ftz(a) (2 ulp). Overall the float32 error stays
//   far inside the 1e-5 (relative to K @ |v|) of the ieee contract; tests/cuda_emulation checks
//   the logic on the CPU and tests/test_cuda_backend.py the numbers on a GPU. float64 uses exp
//   and a * rsqrt(a) (about 1 ulp each).
// - The c columns of v are handled CC at a time in registers: CC = 1 for a vector, else 16
//   (columns of a partial chunk skipped in steps of 4); wider v is split over gridDim.y, each
//   chunk recomputing the distances.
// - The reduction over z is fused: partial sums stay in registers until the end. When there are
//   too few row blocks to fill the GPU, the z range is split over gridDim.z; each split stores
//   its sums in a workspace and a second small kernel adds them in split order, so results are
//   deterministic (no atomics).
// - All global offsets are int64.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kmv_launch.h"

namespace kops {
namespace cuda {
namespace detail {

constexpr int kThreads = 128;  // threads per block (4 warps)

// ---------------------------------------------------------------------------------------------
// Kernel profiles. `coef` is prepared on the host (see profile_coef): the per-pair work is a
// multiply, (a square root,) and one exponential.
template <typename T>
struct Math;

template <>
struct Math<float> {
  // 2^-a with a pre-scaled by log2(e): the instruction behind CUDA's exp2f (maximum error 2 ulp),
  // in its flush-to-zero form, a single MUFU.EX2 (the non-ftz form adds three instructions for
  // subnormal results, which matter here: at small d the instruction issue rate bounds the
  // speed). Results below 2^-126 (a kernel value < 1.2e-38) become 0.
  static __device__ __forceinline__ float exp_neg(float a) {
#ifdef __CUDA_ARCH__
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(-a));
    return r;
#else
    return exp2f(-a);
#endif
  }
  // sqrt(a) as a * rsqrt(a), rsqrt being the instruction behind CUDA's rsqrtf (2 ulp), ftz form.
  // The correctly rounded sqrtf would be a multi-instruction sequence whose slow path is a
  // subroutine call (forcing spills around it). Squared distances below the smallest normal
  // float (distances < 1.1e-19) give 0 rather than the NaN of 0 * inf.
  static __device__ __forceinline__ float sqrt(float a) {
#ifdef __CUDA_ARCH__
    float r;
    asm("rsqrt.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(a));
#else
    const float r = rsqrtf(a);
#endif
    return a >= 1.17549435e-38f ? a * r : 0.0f;
  }
  static constexpr bool kBase2 = true;
};

template <>
struct Math<double> {
  static __device__ __forceinline__ double exp_neg(double a) { return ::exp(-a); }
  static __device__ __forceinline__ double sqrt(double a) { return a > 0.0 ? a * ::rsqrt(a) : 0.0; }
  static constexpr bool kBase2 = false;
};

constexpr double kLog2e = 1.4426950408889634074;
constexpr double kLn2 = 0.69314718055994530942;

// The constant multiplying the raw squared distance (Gaussian, Cauchy) or raw distance (the
// others) so that Math<T>::exp_neg of the product is exp(-u) or exp(-sqrt u); the Cauchy
// profile has no exponential, so its constant is u / s2 = scale^2 itself.
template <typename T>
inline double profile_coef(KernelKind kernel, double scale) {
  const double l = Math<T>::kBase2 ? kLog2e : 1.0;
  if (kernel == KernelKind::kCauchy) return scale * scale;
  return kernel == KernelKind::kGaussian ? scale * scale * l : scale * l;
}

// f(u) from the raw squared distance s2 = |x - z|^2.
template <typename T, KernelKind K>
struct Profile {
  static __device__ __forceinline__ T value(T s2, T coef) {
    constexpr T ln2 = Math<T>::kBase2 ? T(kLn2) : T(1);
    if constexpr (K == KernelKind::kGaussian) {
      return Math<T>::exp_neg(s2 * coef);
    } else if constexpr (K == KernelKind::kCauchy) {  // 1 / (1 + u)
      return T(1) / (T(1) + s2 * coef);
    } else {
      const T t = Math<T>::sqrt(s2) * coef;  // t = scale * r (times log2 e in base 2)
      const T e = Math<T>::exp_neg(t);
      if constexpr (K == KernelKind::kLaplacian) {
        return e;
      } else if constexpr (K == KernelKind::kMatern32) {
        return (T(1) + t * ln2) * e;
      } else {  // Matern52: (1 + t + t^2 / 3) e^-t
        const T tn = t * ln2;
        return (T(1) + tn + tn * tn * T(1.0 / 3.0)) * e;
      }
    }
  }

  // df/du (u = scale^2 s2), the derivative of the profile in the scaled squared distance; 0 at
  // u = 0 for the Laplacian, whose derivative is infinite there (symmetric subgradient).
  static __device__ __forceinline__ T derivative(T s2, T coef) {
    constexpr T ln2 = Math<T>::kBase2 ? T(kLn2) : T(1);
    if constexpr (K == KernelKind::kGaussian) {
      return -Math<T>::exp_neg(s2 * coef);
    } else if constexpr (K == KernelKind::kCauchy) {  // -1 / (1 + u)^2
      const T w = T(1) / (T(1) + s2 * coef);
      return -w * w;
    } else {
      const T t = Math<T>::sqrt(s2) * coef;
      const T e = Math<T>::exp_neg(t);
      if constexpr (K == KernelKind::kLaplacian) {
        const T tn = t * ln2;  // = sqrt(u)
        return tn > T(0) ? e / (T(-2) * tn) : T(0);
      } else if constexpr (K == KernelKind::kMatern32) {
        return T(-0.5) * e;
      } else {
        return (T(1) + t * ln2) * e * T(-1.0 / 6.0);
      }
    }
  }
};

// ---------------------------------------------------------------------------------------------
// Compile-time blocking parameters.

// Padded row length of a z tile in shared memory: a multiple of the 16-byte vector, so that a
// z point is read with 16-byte loads (for D = 3, one float4 instead of three scalar loads).
template <typename T, int D>
struct Layout {
  static constexpr int kVec = 16 / sizeof(T);                    // elements per 16-byte load
  static constexpr int kDP = (D + kVec - 1) / kVec * kVec;
  static constexpr int kDStep = D < 4 ? D : (D >= 32 ? 8 : 4);  // run-time guard granularity
};

// Rows per thread: as many as the register budget allows (x and the accumulators in registers).
// Checked by the compile test (no spills) and to be tuned on a GPU.
template <typename T, int D, int CC>
__host__ __device__ constexpr int rows_per_thread() {
  constexpr int words = int(sizeof(T) / 4);
  constexpr int per_row = (D + CC) * words;
  constexpr int budget = 112;
  return per_row * 8 <= budget ? 8 : per_row * 4 <= budget ? 4 : per_row * 2 <= 160 ? 2 : 1;
}

// z points per shared-memory tile: about 16 KB per tile.
template <typename T, int D, int CC>
__host__ __device__ constexpr int tile_points() {
  constexpr int bytes = (Layout<T, D>::kDP + CC) * int(sizeof(T));
  constexpr int tz = 16384 / bytes;
  return tz >= 256 ? 256 : tz >= 128 ? 128 : tz >= 64 ? 64 : 32;
}

// Vector loads from shared memory (the address is 16-byte aligned by construction).
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Loads N consecutive shared-memory values at p into r with 16-byte loads; p is 16-byte aligned
// and the row is padded to whole vectors (the values beyond N are loaded and dropped).
template <typename T, int N>
__device__ __forceinline__ void load_shared(const T* p, T (&r)[N]) {
  constexpr int vec = 16 / sizeof(T);
  if constexpr (N == 1) {
    r[0] = p[0];
  } else {
#pragma unroll
    for (int q = 0; q < (N + vec - 1) / vec; ++q) {
      const Pack<T, vec> pk = reinterpret_cast<const Pack<T, vec>*>(p)[q];
#pragma unroll
      for (int e = 0; e < vec; ++e)
        if (q * vec + e < N) r[q * vec + e] = pk.v[e];
    }
  }
}

// Stages rows [j0, j0 + tz) of a (rows, cols) strided matrix into a shared tile of row length LD,
// zero-filling columns cols..LD-1 (so that padded dimensions contribute (0 - 0)^2 = 0).
template <typename T, int TZ, int LD>
__device__ __forceinline__ void stage_tile(T* __restrict__ tile, const T* __restrict__ src,
                                           int64_t row_stride, int64_t col_stride, int64_t j0,
                                           int tz, int64_t col0, int cols) {
  for (int e = threadIdx.x; e < TZ * LD; e += kThreads) {
    const int j = e / LD;
    const int k = e - j * LD;
    T val = T(0);
    if (j < tz && k < cols) val = src[(j0 + j) * row_stride + (col0 + k) * col_stride];
    tile[e] = val;
  }
}

// Loads rows row0 + r * kThreads (r < R) of a strided (n, d) matrix into registers, zero beyond
// n and d. The address walks by one stride per element so that no more than one 64-bit address
// per row is live (precomputing all R * D addresses would need 2 registers each).
template <typename T, int R, int D>
__device__ __forceinline__ void load_rows(T (&dst)[R][D], const T* __restrict__ src,
                                          int64_t row_stride, int64_t col_stride, int64_t row0,
                                          int64_t n, int d) {
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int64_t i = row0 + int64_t(r) * kThreads;
    const T* p = src + (i < n ? i : 0) * row_stride;
#pragma unroll
    for (int k = 0; k < D; ++k) {
      dst[r][k] = (i < n && k < d) ? *p : T(0);
      if (k < d - 1) p += col_stride;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// out += alpha * K(x, z) v for one (row block, column chunk, z split). RFORCE > 0 overrides the
// rows per thread (RFORCE = 1 is the one-row-per-thread design, kept as a measured baseline).
template <typename T, KernelKind K, int D, int CC, int RFORCE = 0>
__global__ void __launch_bounds__(kThreads, 2)
    kmv_kernel(const T* __restrict__ x, int64_t xrs, int64_t xcs,
               const T* __restrict__ z, int64_t zrs, int64_t zcs,
               const T* __restrict__ v, int64_t vrs, int64_t vcs,
               T* __restrict__ out, int64_t ors, int64_t ocs, T* __restrict__ partial,
               int64_t n, int64_t m, int d, int64_t c, int64_t m_per_split, T coef, T alpha) {
  constexpr int R = RFORCE > 0 ? RFORCE : rows_per_thread<T, D, CC>();
  constexpr int TZ = tile_points<T, D, CC>();
  constexpr int DP = Layout<T, D>::kDP;
  constexpr int DS = Layout<T, D>::kDStep;
  constexpr int CS = CC < 4 ? CC : 4;  // column guard granularity
  static_assert(D % DS == 0 && CC % CS == 0, "blocking steps must divide the tile sizes");

  __shared__ __align__(16) T zs[TZ * DP];
  __shared__ __align__(16) T vs[TZ * CC];

  const int64_t row0 = int64_t(blockIdx.x) * (kThreads * R) + threadIdx.x;
  const int64_t col0 = int64_t(blockIdx.y) * CC;
  const int cols = int(c - col0 < CC ? c - col0 : CC);
  const int64_t jbeg = int64_t(blockIdx.z) * m_per_split;
  const int64_t jend = m - jbeg < m_per_split ? m : jbeg + m_per_split;
  const int dsteps = (d + DS - 1) / DS;  // uniform run-time trip counts of the guarded steps
  const int csteps = (cols + CS - 1) / CS;

  T xr[R][D];
  load_rows<T, R, D>(xr, x, xrs, xcs, row0, n, d);
  T acc[R][CC];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int q = 0; q < CC; ++q) acc[r][q] = T(0);

  for (int64_t j0 = jbeg; j0 < jend; j0 += TZ) {
    const int tz = int(jend - j0 < TZ ? jend - j0 : TZ);
    __syncthreads();  // the previous tile is no longer read
    stage_tile<T, TZ, DP>(zs, z, zrs, zcs, j0, tz, 0, d);
    stage_tile<T, TZ, CC>(vs, v, vrs, vcs, j0, tz, col0, cols);
    __syncthreads();

    // Not unrolled: the R rows already give independent chains, and unrolling would double
    // the live registers.
#pragma unroll 1
    for (int j = 0; j < tz; ++j) {
      T s2[R];
#pragma unroll
      for (int r = 0; r < R; ++r) s2[r] = T(0);
#pragma unroll
      for (int st = 0; st < D / DS; ++st) {
        if (st < dsteps) {
          T zk[DS];
          load_shared<T, DS>(zs + j * DP + st * DS, zk);
#pragma unroll
          for (int kk = 0; kk < DS; ++kk)
#pragma unroll
            for (int r = 0; r < R; ++r) {
              const T diff = xr[r][st * DS + kk] - zk[kk];
              s2[r] = fma(diff, diff, s2[r]);
            }
        }
      }
      T kv[R];
#pragma unroll
      for (int r = 0; r < R; ++r) kv[r] = Profile<T, K>::value(s2[r], coef);
#pragma unroll
      for (int st = 0; st < CC / CS; ++st) {
        if (st < csteps) {
          T vj[CS];
          load_shared<T, CS>(vs + j * CC + st * CS, vj);
#pragma unroll
          for (int q = 0; q < CS; ++q)
#pragma unroll
            for (int r = 0; r < R; ++r)
              acc[r][st * CS + q] = fma(kv[r], vj[q], acc[r][st * CS + q]);
        }
      }
    }
  }

  // Unsplit: add to out. Split z range: store this split's sums in partial[split][i][col],
  // which reduce_splits then adds to out in split order (deterministic, no atomics).
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int64_t i = row0 + int64_t(r) * kThreads;
    if (i >= n) continue;
#pragma unroll
    for (int q = 0; q < CC; ++q) {
      if (q < cols) {
        if (partial != nullptr) {
          partial[(int64_t(blockIdx.z) * n + i) * c + col0 + q] = alpha * acc[r][q];
        } else {
          out[i * ors + (col0 + q) * ocs] += alpha * acc[r][q];
        }
      }
    }
  }
}

// out[i, q] += sum over splits s (in order) of partial[s][i][q], for i < n, q < c.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    reduce_splits(const T* __restrict__ partial, int64_t splits, int64_t n, int64_t c,
                  T* __restrict__ out, int64_t ors, int64_t ocs) {
  const int64_t total = n * c;
  for (int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * kThreads) {
    T sum = T(0);
    for (int64_t s = 0; s < splits; ++s) sum += partial[s * total + e];
    const int64_t i = e / c;
    out[i * ors + (e - i * c) * ocs] += sum;
  }
}

// ---------------------------------------------------------------------------------------------
// gx += 2 scale^2 sum_j f'(u_ij) <g_i, v_j> (x_i - z_j); rows of x and g in registers, c <= CC.
template <typename T, int D, int CC>
__host__ __device__ constexpr int grad_rows_per_thread() {
  constexpr int words = int(sizeof(T) / 4);
  constexpr int per_row = (2 * D + CC) * words;
  return per_row * 4 <= 112 ? 4 : per_row * 2 <= 144 ? 2 : 1;
}

template <typename T, KernelKind K, int D, int CC>
__global__ void __launch_bounds__(kThreads, 2)
    kmv_grad_kernel(const T* __restrict__ x, int64_t xrs, int64_t xcs,
                    const T* __restrict__ z, int64_t zrs, int64_t zcs,
                    const T* __restrict__ v, int64_t vrs, int64_t vcs,
                    const T* __restrict__ g, int64_t grs, int64_t gcs,
                    T* __restrict__ gx, int64_t gxrs, int64_t gxcs, T* __restrict__ partial,
                    int64_t n, int64_t m, int d, int c, int64_t m_per_split, T coef, T factor) {
  constexpr int R = grad_rows_per_thread<T, D, CC>();
  constexpr int TZ = tile_points<T, D, CC>();
  constexpr int DP = Layout<T, D>::kDP;
  constexpr int DS = Layout<T, D>::kDStep;
  constexpr int CS = CC < 4 ? CC : 4;

  __shared__ __align__(16) T zs[TZ * DP];
  __shared__ __align__(16) T vs[TZ * CC];

  const int64_t row0 = int64_t(blockIdx.x) * (kThreads * R) + threadIdx.x;
  const int64_t jbeg = int64_t(blockIdx.z) * m_per_split;
  const int64_t jend = m - jbeg < m_per_split ? m : jbeg + m_per_split;
  const int dsteps = (d + DS - 1) / DS;
  const int csteps = (c + CS - 1) / CS;

  T xr[R][D], gr[R][CC], acc[R][D];
  load_rows<T, R, D>(xr, x, xrs, xcs, row0, n, d);
  load_rows<T, R, CC>(gr, g, grs, gcs, row0, n, c);
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int k = 0; k < D; ++k) acc[r][k] = T(0);

  for (int64_t j0 = jbeg; j0 < jend; j0 += TZ) {
    const int tz = int(jend - j0 < TZ ? jend - j0 : TZ);
    __syncthreads();
    stage_tile<T, TZ, DP>(zs, z, zrs, zcs, j0, tz, 0, d);
    stage_tile<T, TZ, CC>(vs, v, vrs, vcs, j0, tz, 0, c);
    __syncthreads();

    // Not unrolled: the R rows already give independent chains, and unrolling would double
    // the live registers.
#pragma unroll 1
    for (int j = 0; j < tz; ++j) {
      T s2[R], w[R];
#pragma unroll
      for (int r = 0; r < R; ++r) s2[r] = w[r] = T(0);
#pragma unroll
      for (int st = 0; st < D / DS; ++st) {
        if (st < dsteps) {
          T zk[DS];
          load_shared<T, DS>(zs + j * DP + st * DS, zk);
#pragma unroll
          for (int kk = 0; kk < DS; ++kk)
#pragma unroll
            for (int r = 0; r < R; ++r) {
              const T diff = xr[r][st * DS + kk] - zk[kk];
              s2[r] = fma(diff, diff, s2[r]);
            }
        }
      }
#pragma unroll
      for (int st = 0; st < CC / CS; ++st) {
        if (st < csteps) {
          T vj[CS];
          load_shared<T, CS>(vs + j * CC + st * CS, vj);
#pragma unroll
          for (int q = 0; q < CS; ++q)
#pragma unroll
            for (int r = 0; r < R; ++r) w[r] = fma(gr[r][st * CS + q], vj[q], w[r]);
        }
      }
#pragma unroll
      for (int r = 0; r < R; ++r) w[r] *= Profile<T, K>::derivative(s2[r], coef);
#pragma unroll
      for (int st = 0; st < D / DS; ++st) {
        if (st < dsteps) {
          T zk[DS];
          load_shared<T, DS>(zs + j * DP + st * DS, zk);
#pragma unroll
          for (int kk = 0; kk < DS; ++kk)
#pragma unroll
            for (int r = 0; r < R; ++r)
              acc[r][st * DS + kk] = fma(w[r], xr[r][st * DS + kk] - zk[kk], acc[r][st * DS + kk]);
        }
      }
    }
  }

#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int64_t i = row0 + int64_t(r) * kThreads;
    if (i >= n) continue;
#pragma unroll
    for (int k = 0; k < D; ++k) {
      if (k < d) {
        if (partial != nullptr) {
          partial[(int64_t(blockIdx.z) * n + i) * d + k] = factor * acc[r][k];
        } else {
          gx[i * gxrs + int64_t(k) * gxcs] += factor * acc[r][k];
        }
      }
    }
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace kops
