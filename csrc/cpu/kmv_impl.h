// The tile kernels of the native CPU backend, written once against the vector operations of
// kmv_simd.h and compiled per ISA (namespace KOPS_CPU_ISA) by kmv_avx512.cpp, kmv_avx2.cpp
// and kmv_portable.cpp. See kmv_kernels.h for the data layouts.
//
// One call covers a block of X rows and a range of Z panels. Per tile of Z (tile_panels
// panels, a few hundred rows) it
//   1. computes the kernel values of the block x tile into a work buffer that stays in the
//      core's L2 cache: a 6 x (2 or 4 vectors) register-blocked microkernel forms the dot
//      products (GEMM trick: u = |x|^2 + |z|^2 - 2 x.z, clamped at 0) or the sums of
//      squared differences (direct mode, small d), then applies the profile f(u) with a
//      vectorised exp while the values are still in registers;
//   2. multiplies that tile with the matching rows of V, vectorised along the tile's columns
//      (so c = 1 runs at full vector width) and register-blocked over rows x columns of V.
// K is therefore never formed beyond one block x tile.
#pragma once

#include "kmv_kernels.h"
#include "kmv_simd.h"

namespace kops_cpu {
namespace KOPS_CPU_ISA {

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// Vectors per packed panel of Z (NR = kNV * W columns).
#if defined(KOPS_CPU_AVX512)
constexpr int kNV = 4;
#else
constexpr int kNV = 2;
#endif

// Features per chunk of the packed layouts (kmv_kernels.h): a panel's chunk (kc x kNV vectors)
// is 16 KiB whatever the vector width, so it stays in L1 next to the row group's chunk.
template <typename T>
constexpr int64_t kc_of() {
  return 16384 / (kNV * Ops<T>::W * static_cast<int64_t>(sizeof(T)));
}

// f(u) and f'(u) of each kernel (kops/kernels.py), u >= 0 the scaled squared distance.
template <typename T, int KERN>
struct Profile {
  using O = Ops<T>;
  using V = typename O::V;
  static inline V value(V u) {
    if (KERN == kGaussian) return O::exp_neg(u);
    if (KERN == kCauchy) return O::div(O::set1(T(1)), O::add(O::set1(T(1)), u));  // 1 / (1 + u)
    V t = O::sqrt(u);
    V e = O::exp_neg(t);
    if (KERN == kLaplacian) return e;
    if (KERN == kMatern32) return O::mul(O::add(O::set1(T(1)), t), e);
    // matern52: (1 + t + u/3) exp(-t)
    V poly = O::fmadd(u, O::set1(T(1) / T(3)), O::add(O::set1(T(1)), t));
    return O::mul(poly, e);
  }
  static inline V derivative(V u) {
    if (KERN == kGaussian) return O::sub(O::zero(), O::exp_neg(u));
    if (KERN == kCauchy) {  // -1 / (1 + u)^2
      V w = O::div(O::set1(T(1)), O::add(O::set1(T(1)), u));
      return O::sub(O::zero(), O::mul(w, w));
    }
    V t = O::sqrt(u);
    V e = O::exp_neg(t);
    if (KERN == kLaplacian) {
      // exp(-r) / (-2 r), taken as 0 at r = 0 (the symmetric subgradient)
      return O::select_pos(t, O::div(e, O::mul(O::set1(T(-2)), t)));
    }
    if (KERN == kMatern32) return O::mul(O::set1(T(-0.5)), e);
    return O::mul(O::mul(O::add(O::set1(T(1)), t), e), O::set1(T(-1) / T(6)));
  }
};

// Epilogues of the distance microkernel: what is stored for a vector of u values (the
// kernel values, possibly rounded as a tf32 / bf16 operand, or u itself), or, for a single
// column of V (kAccumulateV), the kernel values times V added to per-row vector sums: the
// tile of kernel values is then never stored and read back.
enum Epilogue : int { kStoreKernel = 0, kStoreKernelTf32 = 1, kStoreKernelBf16 = 2, kStoreU = 3,
                      kAccumulateV = 4 };

template <typename T, int KERN, int EPI>
inline void finish(typename Ops<T>::V u, T* dst) {
  if (EPI == kStoreU) {
    Ops<T>::store(dst, u);
    return;
  }
  typename Ops<T>::V k = Profile<T, KERN>::value(u);
  if (EPI == kStoreKernelTf32) k = Ops<T>::template round_bits<13>(k);
  if (EPI == kStoreKernelBf16) k = Ops<T>::template round_bits<16>(k);
  Ops<T>::store(dst, k);
}

// GEMM-trick microkernel: a kMR x NR block (NR = kNV vectors) of scaled squared distances.
// xg: packed row group (d x kMR), zpn: packed panel (d x NR), xn6 / zn: their norms.
// For large d the k range comes in chunks (see distance_tile): `resume` starts from the
// partial dot products in dst, `last` says whether to finish (epilogue) or to store the
// partial dot products back. The fixed-size loops unroll completely, so the kMR x kNV
// accumulators live in registers (12 of 16 with AVX2, 24 of 32 with AVX-512).
// kAccumulateV: the last chunk adds f(u) * v (vp: the panel's NR values of V) to the rows'
// vector sums racc (kMR x W) instead of storing f(u) in dst.
template <typename T, int KERN, int EPI>
inline void micro_gemm(const T* __restrict xg, const T* __restrict zpn, int64_t d,
                       const T* __restrict xn6, const T* __restrict zn, T* __restrict dst,
                       int64_t ldd, bool resume = false, bool last = true,
                       T* __restrict racc = nullptr, const T* __restrict vp = nullptr) {
  using O = Ops<T>;
  using V = typename O::V;
  constexpr int W = O::W;
  constexpr int NR = kNV * W;
  V acc[kMR][kNV];
#pragma GCC unroll 8
  for (int r = 0; r < kMR; ++r)
#pragma GCC unroll 4
    for (int h = 0; h < kNV; ++h) acc[r][h] = resume ? O::load(dst + r * ldd + h * W) : O::zero();
  for (int64_t k = 0; k < d; ++k) {
    V z[kNV];
#pragma GCC unroll 4
    for (int h = 0; h < kNV; ++h) z[h] = O::load(zpn + k * NR + h * W);
    const T* xk = xg + k * kMR;
#pragma GCC unroll 8
    for (int r = 0; r < kMR; ++r) {
      const V b = O::set1(xk[r]);
#pragma GCC unroll 4
      for (int h = 0; h < kNV; ++h) acc[r][h] = O::fmadd(b, z[h], acc[r][h]);
    }
  }
  // Park the dot products in L1 before the epilogue: keeping the accumulators live across
  // the (register-hungry) exp code made the compiler spill them inside the k loop.
  T* park = dst;
  int64_t ldp = ldd;
  alignas(64) T buf[kMR * NR];
  if (last) park = buf, ldp = NR;
#pragma GCC unroll 8
  for (int r = 0; r < kMR; ++r)
#pragma GCC unroll 4
    for (int h = 0; h < kNV; ++h) O::store(park + r * ldp + h * W, acc[r][h]);
  if (!last) return;
  const V m2 = O::set1(T(-2));
  // u = clamp0(|x|^2 + |z|^2 - 2 x.z): rounding can make it slightly negative
#pragma GCC unroll 1
  for (int r = 0; r < kMR; ++r) {
    const V xr = O::set1(xn6[r]);
    if (EPI == kAccumulateV) {
      V sum = O::load(racc + r * W);
#pragma GCC unroll 4
      for (int h = 0; h < kNV; ++h) {
        const V s = O::add(xr, O::load(zn + h * W));
        const V k = Profile<T, KERN>::value(O::clamp0(O::fmadd(m2, O::load(buf + r * NR + h * W), s)));
        sum = O::fmadd(k, O::load(vp + h * W), sum);
      }
      O::store(racc + r * W, sum);
      continue;
    }
#pragma GCC unroll 4
    for (int h = 0; h < kNV; ++h) {
      const V s = O::add(xr, O::load(zn + h * W));
      finish<T, KERN, EPI>(O::clamp0(O::fmadd(m2, O::load(buf + r * NR + h * W), s)), dst + r * ldd + h * W);
    }
  }
}

// Direct-differences microkernel (small d): u = sum_k (x_k - z_k)^2, which cannot cancel.
// Done one vector half of the panel at a time to stay within the register file.
template <typename T, int KERN, int EPI>
inline void micro_direct(const T* __restrict xg, const T* __restrict zpn, int64_t d,
                         T* __restrict dst, int64_t ldd) {
  using O = Ops<T>;
  using V = typename O::V;
  constexpr int W = O::W;
  constexpr int NR = kNV * W;
  for (int h = 0; h < kNV; ++h) {
    V a0 = O::zero(), a1 = O::zero(), a2 = O::zero(), a3 = O::zero(), a4 = O::zero(),
      a5 = O::zero();
    for (int64_t k = 0; k < d; ++k) {
      const V z = O::load(zpn + k * NR + h * W);
      const T* xk = xg + k * kMR;
      V t;
      t = O::sub(O::set1(xk[0]), z);
      a0 = O::fmadd(t, t, a0);
      t = O::sub(O::set1(xk[1]), z);
      a1 = O::fmadd(t, t, a1);
      t = O::sub(O::set1(xk[2]), z);
      a2 = O::fmadd(t, t, a2);
      t = O::sub(O::set1(xk[3]), z);
      a3 = O::fmadd(t, t, a3);
      t = O::sub(O::set1(xk[4]), z);
      a4 = O::fmadd(t, t, a4);
      t = O::sub(O::set1(xk[5]), z);
      a5 = O::fmadd(t, t, a5);
    }
    T* o = dst + h * W;
    finish<T, KERN, EPI>(a0, o);
    finish<T, KERN, EPI>(a1, o + ldd);
    finish<T, KERN, EPI>(a2, o + 2 * ldd);
    finish<T, KERN, EPI>(a3, o + 3 * ldd);
    finish<T, KERN, EPI>(a4, o + 4 * ldd);
    finish<T, KERN, EPI>(a5, o + 5 * ldd);
  }
}

// Fill dst (rows of groups [g0, g1) x columns of panels [p0, p1), leading dimension ldd,
// room for every row of the groups and every column of the panels)
// with f(u) (EPI = kStoreKernel) or u (kStoreU). Panels outer, row groups inner: one
// panel (d x NR) is reused from L1 by every row group of the block.
// kAccumulateV (GEMM-trick mode, c = 1, not same points): dst holds only the partial dot
// products of a long d, and racc ((g1 - g0) * kMR x W) the rows' vector sums of f(u) v.
template <typename T, int KERN, int EPI>
void distance_tile(const TileArgs<T>& a, int64_t g0, int64_t g1, int64_t p0, int64_t p1, T* dst,
                   int64_t ldd, T* racc = nullptr) {
  constexpr int NR = kNV * Ops<T>::W;
  const int64_t d = a.d;
  // The packed chunks of kc features (kc_of<T>() for this ISA, or kc >= d): a panel's chunk
  // (NR x kc) stays in L1 while it is swept over the block's row groups, whose chunks are
  // read from L2 as one stream.
  const int64_t kKC = a.kc;
  for (int64_t k0 = 0; k0 < d; k0 += kKC) {
    const int64_t kc = imin(kKC, d - k0);
    const bool resume = k0 > 0, last = k0 + kc >= d;
    const T* xchunk = a.xp + k0 * a.groups * kMR;
    const T* zchunk = a.zp + k0 * a.panels * NR;
    for (int64_t p = p0; p < p1; ++p) {
      const T* zpn = zchunk + p * kc * NR;
      T* col = dst + (p - p0) * NR;
      // Bring the next panel's chunk (or the first panel's next chunk) towards L1 while this
      // one is in use, a few lines per row group: the stream of Z panels then never waits
      // for L3 (worth about 10% at d = 784).
      const char* next = nullptr;
      int64_t next_lines = 0;
      if (!a.direct) {
        if (p + 1 < p1) {
          next = reinterpret_cast<const char*>(zpn + kc * NR);
          next_lines = kc * NR * static_cast<int64_t>(sizeof(T)) / 64;
        } else if (k0 + kKC < d) {
          const int64_t kn = imin(kKC, d - k0 - kKC);
          next = reinterpret_cast<const char*>(a.zp + (k0 + kKC) * a.panels * NR + p0 * kn * NR);
          next_lines = kn * NR * static_cast<int64_t>(sizeof(T)) / 64;
        }
      }
      const int64_t per_group = (next_lines + (g1 - g0) - 1) / (g1 - g0);
      for (int64_t g = g0; g < g1; ++g) {
        const T* xg = xchunk + (g - a.xg0) * kc * kMR;
        T* o = col + (g - g0) * kMR * ldd;
        for (int64_t l = (g - g0) * per_group, e = imin(next_lines, l + per_group); l < e; ++l)
          __builtin_prefetch(next + l * 64, 0, 2);
        if constexpr (EPI == kAccumulateV)
          micro_gemm<T, KERN, EPI>(xg, zpn, kc, a.xn + (g - a.xg0) * kMR, a.zn + p * NR, o, ldd, resume, last,
                                   racc + (g - g0) * kMR * Ops<T>::W, a.vt + p * NR);
        else if (a.direct)
          micro_direct<T, KERN, EPI>(xg, zpn, kc, o, ldd);  // d <= kDirectMaxD < kKC
        else
          micro_gemm<T, KERN, EPI>(xg, zpn, kc, a.xn + (g - a.xg0) * kMR, a.zn + p * NR, o, ldd, resume, last);
      }
    }
  }
  if (EPI != kAccumulateV && a.same) {
    // x is z: the diagonal is exactly distance 0, whatever the rounding above did.
    const int64_t r0 = g0 * kMR, c0 = p0 * NR, c1 = p1 * NR;
    const T diag = EPI == kStoreU ? T(0) : T(1);  // f(0) = 1 for every kops kernel (exact in tf32 / bf16)
    const int64_t i_hi = imin(g1 * kMR, a.n);
    for (int64_t i = r0 > c0 ? r0 : c0; i < i_hi && i < c1; ++i) dst[(i - r0) * ldd + (i - c0)] = diag;
  }
}

#include "kmv_grad_products.h"

// acc (rows x c) += K (rows x cols, leading dimension ldk) @ V[col0 : col0 + cols]: R rows x
// C columns of V per pass, vectorised along the tile's columns (cols is a multiple of W).
template <typename T, int R, int C>
inline void value_block(const T* __restrict k, int64_t ldk, const T* __restrict vt, int64_t ldv,
                        int64_t cols, T* __restrict acc, int64_t c) {
  using O = Ops<T>;
  using V = typename O::V;
  constexpr int W = O::W;
  V s[R][C];
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < C; ++q) s[r][q] = O::zero();
  for (int64_t j = 0; j < cols; j += W) {
    V kv[R], vv[C];
    for (int r = 0; r < R; ++r) kv[r] = O::load(k + r * ldk + j);
    for (int q = 0; q < C; ++q) {
      vv[q] = O::load(vt + q * ldv + j);
#if defined(KOPS_CPU_AVX512) || defined(KOPS_CPU_AVX2)
      // keep the rows of V in registers: GCC otherwise folds their loads into each of the R
      // FMAs, and the loop is then bound by loads (d = 16, c = 10, 1 thread: 8.6 -> 7.4 ms)
      asm("" : "+v"(vv[q]));
#endif
    }
    for (int q = 0; q < C; ++q)
      for (int r = 0; r < R; ++r) s[r][q] = O::fmadd(kv[r], vv[q], s[r][q]);
  }
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < C; ++q) acc[r * c + q] += O::hsum(s[r][q]);
}

template <typename T, int R, int C>
inline void value_rows(const T* k, int64_t ldk, int64_t rows, const T* vt, int64_t ldv,
                       int64_t cols, T* acc, int64_t c) {
  int64_t i = 0;
  for (; i + R <= rows; i += R) value_block<T, R, C>(k + i * ldk, ldk, vt, ldv, cols, acc + i * c, c);
  for (; i < rows; ++i) value_block<T, 1, C>(k + i * ldk, ldk, vt, ldv, cols, acc + i * c, c);
}

// acc (rows x c) += K tile @ V tile, columns of V in chunks of up to 4 (about 8-12
// accumulators per pass: enough to hide the FMA latency, few enough to stay in registers).
template <typename T>
void value_tile(const T* k, int64_t ldk, int64_t rows, const T* vt, int64_t ldv, int64_t cols,
                T* acc, int64_t c) {
  int64_t l = 0;
  for (; l + 4 <= c; l += 4) value_rows<T, 3, 4>(k, ldk, rows, vt + l * ldv, ldv, cols, acc + l, c);
  const int64_t rest = c - l;
  if (rest == 3) value_rows<T, 4, 3>(k, ldk, rows, vt + l * ldv, ldv, cols, acc + l, c);
  if (rest == 2) value_rows<T, 4, 2>(k, ldk, rows, vt + l * ldv, ldv, cols, acc + l, c);
  if (rest == 1) value_rows<T, 8, 1>(k, ldk, rows, vt + l * ldv, ldv, cols, acc + l, c);
}

// acc += K tile (rows x cols, leading dimension ldk) @ V[col0 : col0 + cols]. Narrow V
// (a.vrow unset): value_tile, vectorised along the tile's columns (c = 1 at full width).
// Wide V: the microkernel of the gradient's products on V row-major, vectorised along c with
// no horizontal sum per row and column of V (c = 100 at d = 64, 1 thread: 0.040-0.048 s with
// value_tile, 0.031 s with this).
template <typename T>
inline void value_product(const TileArgs<T>& a, const T* k, int64_t ldk, int64_t rows, int64_t col0,
                          int64_t cols, T* acc) {
  if (a.vrow != nullptr)
    sub_product<T, false>(k, ldk, 1, rows, cols, a.vrow + col0 * a.cpad, a.cpad, a.cpad, acc);
  else
    value_tile<T>(k, ldk, rows, a.vt + col0, a.m_pad, cols, acc, a.c);
}

template <typename T, int KERN, int EPI>
void kmv_rows_k(const TileArgs<T>& a, int64_t g0, int64_t g1, int64_t p0, int64_t p1, T* acc,
                T* work) {
  constexpr int NR = kNV * Ops<T>::W;
  const int64_t ldk = a.tile_panels * NR;
  const int64_t rows = imin(g1 * kMR, a.n) - g0 * kMR;
  if (rows <= 0) return;
  if (EPI == kStoreKernel && a.c == 1 && a.vrow == nullptr && !a.direct && !a.same &&
      g1 - g0 <= kMaxForwardBlockGroups) {
    // one column of V: f(u) v summed in the microkernel's epilogue (kAccumulateV), one
    // vector per row, added up once per block (a plain array: no std template in the
    // per-ISA code, see kmv_simd.h)
    using O = Ops<T>;
    constexpr int W = O::W;
    alignas(64) T racc[kMaxForwardBlockGroups * kMR * W];
    for (int64_t i = 0; i < (g1 - g0) * kMR * W; ++i) racc[i] = T(0);
    for (int64_t t0 = p0; t0 < p1; t0 += a.tile_panels)
      distance_tile<T, KERN, kAccumulateV>(a, g0, g1, t0, imin(t0 + a.tile_panels, p1), work, ldk, racc);
    for (int64_t i = 0; i < rows; ++i) acc[i] += O::hsum(O::load(racc + i * W));
    return;
  }
  for (int64_t t0 = p0; t0 < p1; t0 += a.tile_panels) {
    const int64_t t1 = imin(t0 + a.tile_panels, p1);
    distance_tile<T, KERN, EPI>(a, g0, g1, t0, t1, work, ldk);
    value_product<T>(a, work, ldk, rows, t0 * NR, (t1 - t0) * NR, acc);
  }
}

template <typename T, int EPI>
void kmv_rows_e(const TileArgs<T>& a, int64_t g0, int64_t g1, int64_t p0, int64_t p1, T* acc,
                T* work) {
  switch (a.kernel) {
#define KOPS_CASE(name, code, smooth) \
    case k##name: return kmv_rows_k<T, k##name, EPI>(a, g0, g1, p0, p1, acc, work);
    KOPS_FOR_EACH_KERNEL(KOPS_CASE)
#undef KOPS_CASE
    default: return;  // unknown codes are refused by the binding
  }
}

template <typename T>
void kmv_rows(const TileArgs<T>& a, int64_t g0, int64_t g1, int64_t p0, int64_t p1, T* acc,
              T* work) {
  if (a.rounding == kTf32) return kmv_rows_e<T, kStoreKernelTf32>(a, g0, g1, p0, p1, acc, work);
  if (a.rounding == kBf16) return kmv_rows_e<T, kStoreKernelBf16>(a, g0, g1, p0, p1, acc, work);
  return kmv_rows_e<T, kStoreKernel>(a, g0, g1, p0, p1, acc, work);
}

// q = f'(u) * (G V^T) on one tile; the distance microkernel stores u, then each row is
// finished in place: noise floor (non-smooth kernels), derivative, product with <g_i, v_j>.
template <typename T, int KERN>
void grad_tile_k(const TileArgs<T>& a, int64_t g0, int64_t g1, int64_t p0, int64_t p1, T* q,
                 int64_t ldq, T* rs, T* cs) {
  using O = Ops<T>;
  using V = typename O::V;
  constexpr int W = O::W;
  constexpr int NR = kNV * W;
  distance_tile<T, KERN, kStoreU>(a, g0, g1, p0, p1, q, ldq);
  const int64_t r0 = g0 * kMR;
  const int64_t rows = imin(g1 * kMR, a.n) - r0;
  const int64_t cols = (p1 - p0) * NR;
  const int64_t col0 = p0 * NR;
  const T floor_factor = T(16) * (sizeof(T) == 4 ? T(1.1920928955078125e-07) : T(2.220446049250313e-16));
  for (int64_t i = 0; i < rows; ++i) {
    T* qi = q + i * ldq;
    const T* gi = a.g + (r0 + i) * a.c;
    const V xni = O::set1(a.direct || !a.noise_floor ? T(0) : a.xn[r0 + i]);
    V rsum = O::zero();
    for (int64_t j = 0; j < cols; j += W) {
      V u = O::load(qi + j);
      if (a.noise_floor && !a.direct) {
        // below the GEMM trick's rounding noise the distance is indistinguishable from 0
        const V fl = O::mul(O::add(xni, O::load(a.zn + col0 + j)), O::set1(floor_factor));
        u = O::zero_if_le(u, fl);
      }
      V gv = O::zero();
      for (int64_t l = 0; l < a.c; ++l)
        gv = O::fmadd(O::set1(gi[l]), O::load(a.vt + l * a.m_pad + col0 + j), gv);
      const V qv = O::mul(Profile<T, KERN>::derivative(u), gv);
      O::store(qi + j, qv);
      // row and column sums while q is in registers (saves two passes over the tile)
      rsum = O::add(rsum, qv);
      O::store(cs + j, O::add(O::load(cs + j), qv));
    }
    rs[i] += O::hsum(rsum);
  }
}

template <typename T>
void grad_tile(const TileArgs<T>& a, int64_t g0, int64_t g1, int64_t p0, int64_t p1, T* q,
               int64_t ldq, T* rs, T* cs) {
  switch (a.kernel) {
#define KOPS_CASE(name, code, smooth) \
    case k##name: return grad_tile_k<T, k##name>(a, g0, g1, p0, p1, q, ldq, rs, cs);
    KOPS_FOR_EACH_KERNEL(KOPS_CASE)
#undef KOPS_CASE
    default: return;
  }
}

template <typename T>
void kernel_tile(const TileArgs<T>& a, int64_t g0, int64_t g1, int64_t p0, int64_t p1, T* dst,
                 int64_t ldd) {
  switch (a.kernel) {
#define KOPS_CASE(name, code, smooth) \
    case k##name: return distance_tile<T, k##name, kStoreKernel>(a, g0, g1, p0, p1, dst, ldd);
    KOPS_FOR_EACH_KERNEL(KOPS_CASE)
#undef KOPS_CASE
    default: return;
  }
}

// out[i] = exp(-in[i]) by the vector exp of the tile kernels (its accuracy test and the
// benchmark's exp rate); a partial last vector goes through a padded copy.
template <typename T>
void exp_neg_array(const T* in, T* out, int64_t len) {
  using O = Ops<T>;
  constexpr int W = O::W;
  int64_t i = 0;
  for (; i + W <= len; i += W) O::store(out + i, O::exp_neg(O::load(in + i)));
  if (i < len) {
    alignas(64) T buf[W] = {};
    for (int64_t k = i; k < len; ++k) buf[k - i] = in[k];
    O::store(buf, O::exp_neg(O::load(buf)));
    for (int64_t k = i; k < len; ++k) out[k] = buf[k - i];
  }
}

// Twelve independent FMA chains, `reps` steps each: the FMA pipes' peak for the benchmark's
// floor (a GEMM microkernel issues exactly this mix). Returns a value so the work is kept.
template <typename T>
T fma_chains(int64_t reps) {
  using O = Ops<T>;
  using V = typename O::V;
  V a[12];
  for (int i = 0; i < 12; ++i) a[i] = O::set1(T(1) + T(i) * T(1e-3));
  const V b = O::set1(T(0.999999)), c = O::set1(T(1e-7));
  for (int64_t r = 0; r < reps; ++r) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) a[i] = O::fmadd(a[i], b, c);
  }
  V s = O::zero();
  for (int i = 0; i < 12; ++i) s = O::add(s, a[i]);
  return O::hsum(s);
}

inline const IsaTable* make_table(const char* name) {
  static const IsaTable table = {name,
                                 kNV * Ops<float>::W,
                                 kNV * Ops<double>::W,
                                 static_cast<int>(kc_of<float>()),
                                 static_cast<int>(kc_of<double>()),
                                 &kmv_rows<float>,
                                 &kmv_rows<double>,
                                 &grad_tile<float>,
                                 &grad_tile<double>,
                                 &kernel_tile<float>,
                                 &kernel_tile<double>,
                                 &exp_neg_array<float>,
                                 &exp_neg_array<double>,
                                 &fma_chains<float>,
                                 &fma_chains<double>,
                                 Ops<float>::W,
                                 &grad_products<float>,
                                 &grad_products<double>,
                                 &grad_products_small<float>,
                                 &grad_products_small<double>};
  return &table;
}

}  // namespace KOPS_CPU_ISA
}  // namespace kops_cpu
