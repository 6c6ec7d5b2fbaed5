// SIMD vector types for the native CPU kernels: an AVX-512 implementation (compiled only in
// the translation unit built with -mavx512f ...), an AVX2+FMA one (the unit built with
// -mavx2 -mfma) and a portable one (plain loops over a small array, which the compiler
// vectorises for the baseline ISA). The width per dtype is 16 floats / 8 doubles for AVX-512
// and 8 / 4 otherwise; the packed panel width follows it (IsaTable::nr_f32, nr_f64).
//
// Deliberately torch-free and std-template-free: this header is compiled with different
// target flags in different translation units, and any inline function shared between
// them could be merged by the linker into the wrong variant.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(KOPS_CPU_AVX2) || defined(KOPS_CPU_AVX512)
#include <immintrin.h>
#endif

namespace kops_cpu {
namespace KOPS_CPU_ISA {

// ---------------------------------------------------------------- portable vectors
template <typename T, int N>
struct PVec {
  T v[N];
};

template <typename T, int N>
struct PortableOps {
  using V = PVec<T, N>;
  static constexpr int W = N;
  static inline V load(const T* p) {
    V r;
    for (int k = 0; k < N; ++k) r.v[k] = p[k];
    return r;
  }
  static inline void store(T* p, const V& a) {
    for (int k = 0; k < N; ++k) p[k] = a.v[k];
  }
  static inline V set1(T s) {
    V r;
    for (int k = 0; k < N; ++k) r.v[k] = s;
    return r;
  }
  static inline V zero() { return set1(T(0)); }
  static inline V add(const V& a, const V& b) {
    V r;
    for (int k = 0; k < N; ++k) r.v[k] = a.v[k] + b.v[k];
    return r;
  }
  static inline V sub(const V& a, const V& b) {
    V r;
    for (int k = 0; k < N; ++k) r.v[k] = a.v[k] - b.v[k];
    return r;
  }
  static inline V mul(const V& a, const V& b) {
    V r;
    for (int k = 0; k < N; ++k) r.v[k] = a.v[k] * b.v[k];
    return r;
  }
  // a * b + c
  static inline V fmadd(const V& a, const V& b, const V& c) {
    V r;
    for (int k = 0; k < N; ++k) r.v[k] = a.v[k] * b.v[k] + c.v[k];
    return r;
  }
  // max(t, 0) that keeps NaN (a NaN input must reach the output).
  static inline V clamp0(const V& a) {
    V r;
    for (int k = 0; k < N; ++k) r.v[k] = a.v[k] < T(0) ? T(0) : a.v[k];
    return r;
  }
  // a where a > b, else 0 (used for the Laplacian's noise floor; NaN compares false -> 0
  // is not wanted, so NaN is kept explicitly).
  static inline V zero_if_le(const V& a, const V& b) {
    V r;
    for (int k = 0; k < N; ++k) r.v[k] = a.v[k] <= b.v[k] ? T(0) : a.v[k];
    return r;
  }
  // where(a > 0, b, 0)
  static inline V select_pos(const V& a, const V& b) {
    V r;
    for (int k = 0; k < N; ++k) r.v[k] = a.v[k] > T(0) ? b.v[k] : (a.v[k] != a.v[k] ? a.v[k] : T(0));
    return r;
  }
  static inline V sqrt(const V& a) {
    V r;
    for (int k = 0; k < N; ++k) r.v[k] = std::sqrt(a.v[k]);
    return r;
  }
  static inline V div(const V& a, const V& b) {
    V r;
    for (int k = 0; k < N; ++k) r.v[k] = a.v[k] / b.v[k];
    return r;
  }
  // exp(-a) for a >= 0 (or NaN).
  static inline V exp_neg(const V& a) {
    V r;
    for (int k = 0; k < N; ++k) r.v[k] = std::exp(-a.v[k]);
    return r;
  }
  // Operand rounding of the reduced-precision modes (kops/precision.py): to float32, then
  // round to nearest even at 10 (tf32) or 7 (bf16) mantissa bits, back to T.
  template <int SHIFT>
  static inline V round_bits(const V& a) {
    V r;
    for (int k = 0; k < N; ++k) {
      float f = static_cast<float>(a.v[k]);
      uint32_t b;
      std::memcpy(&b, &f, 4);
      const uint32_t half = (1u << (SHIFT - 1)) - 1u;
      b = (b + half + ((b >> SHIFT) & 1u)) & ~((1u << SHIFT) - 1u);
      std::memcpy(&f, &b, 4);
      r.v[k] = static_cast<T>(f);
    }
    return r;
  }
  static inline T hsum(const V& a) {
    T s = T(0);
    for (int k = 0; k < N; ++k) s += a.v[k];
    return s;
  }
};

#if defined(KOPS_CPU_AVX2)
// ------------------------------------------------------------------ AVX2 float x 8
struct Avx2F {
  using V = __m256;
  static constexpr int W = 8;
  static inline V load(const float* p) { return _mm256_loadu_ps(p); }
  static inline void store(float* p, V a) { _mm256_storeu_ps(p, a); }
  static inline V set1(float s) { return _mm256_set1_ps(s); }
  static inline V zero() { return _mm256_setzero_ps(); }
  static inline V add(V a, V b) { return _mm256_add_ps(a, b); }
  static inline V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static inline V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static inline V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  // maxps returns its second operand when either is NaN: put t second to keep NaN.
  static inline V clamp0(V a) { return _mm256_max_ps(_mm256_setzero_ps(), a); }
  static inline V zero_if_le(V a, V b) {
    return _mm256_andnot_ps(_mm256_cmp_ps(a, b, _CMP_LE_OQ), a);
  }
  static inline V select_pos(V a, V b) {
    V pos = _mm256_cmp_ps(a, _mm256_setzero_ps(), _CMP_GT_OQ);
    V nan = _mm256_cmp_ps(a, a, _CMP_UNORD_Q);
    return _mm256_or_ps(_mm256_and_ps(pos, b), _mm256_and_ps(nan, a));
  }
  static inline V sqrt(V a) { return _mm256_sqrt_ps(a); }
  static inline V div(V a, V b) { return _mm256_div_ps(a, b); }
  // exp(-a), a >= 0 (NaN passes through): -a = n ln2 + r with |r| <= ln2/2, n rounded by
  // the 1.5 * 2^23 shifter (n lands in the low mantissa bits, no convert instruction),
  // exp(r) by a degree-6 near-minimax polynomial fitted for this kernel (max relative error
  // about 1e-7 in float32), times 2^n written into the exponent bits. The coefficients are
  // pre-multiplied by 2^-64 and 2^(n+64) is built instead, so that results in the subnormal
  // range are rounded once instead of flushed; a is capped at 104 (exp(-104) is 0 in float32).
  static inline V exp_neg(V a) {
    a = _mm256_min_ps(_mm256_set1_ps(104.0f), a);  // minps returns a when a is NaN
    const V shifter = _mm256_set1_ps(12582912.0f);  // 1.5 * 2^23
    const V nf = _mm256_fnmadd_ps(a, _mm256_set1_ps(1.44269504088896341f), shifter);
    const V n = _mm256_sub_ps(nf, shifter);
    V r = _mm256_fnmsub_ps(n, _mm256_set1_ps(0.693359375f), a);  // -a - n * ln2_hi
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);  // - n * ln2_lo
    const float k = 5.42101086242752217e-20f;  // 2^-64
    V p = _mm256_set1_ps(1.383580151e-03f * k);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.375644684e-03f * k));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.166828841e-02f * k));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.666641086e-01f * k));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.999999106e-01f * k));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(k));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(k));
    // bits(nf) = bits(shifter) + n; the shift keeps n + 127 + 64 as the exponent field
    const __m256i e = _mm256_add_epi32(_mm256_castps_si256(nf), _mm256_set1_epi32(127 + 64));
    return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(e, 23)));
  }
  // round to nearest even at 23 - SHIFT mantissa bits (tf32: SHIFT 13, bf16: SHIFT 16)
  template <int SHIFT>
  static inline V round_bits(V a) {
    __m256i b = _mm256_castps_si256(a);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, SHIFT), _mm256_set1_epi32(1));
    b = _mm256_add_epi32(b, _mm256_add_epi32(_mm256_set1_epi32((1 << (SHIFT - 1)) - 1), lsb));
    b = _mm256_and_si256(b, _mm256_set1_epi32(~((1 << SHIFT) - 1)));
    return _mm256_castsi256_ps(b);
  }
  static inline float hsum(V a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};

// ----------------------------------------------------------------- AVX2 double x 4
struct Avx2D {
  using V = __m256d;
  static constexpr int W = 4;
  static inline V load(const double* p) { return _mm256_loadu_pd(p); }
  static inline void store(double* p, V a) { _mm256_storeu_pd(p, a); }
  static inline V set1(double s) { return _mm256_set1_pd(s); }
  static inline V zero() { return _mm256_setzero_pd(); }
  static inline V add(V a, V b) { return _mm256_add_pd(a, b); }
  static inline V sub(V a, V b) { return _mm256_sub_pd(a, b); }
  static inline V mul(V a, V b) { return _mm256_mul_pd(a, b); }
  static inline V fmadd(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static inline V clamp0(V a) { return _mm256_max_pd(_mm256_setzero_pd(), a); }
  static inline V zero_if_le(V a, V b) {
    return _mm256_andnot_pd(_mm256_cmp_pd(a, b, _CMP_LE_OQ), a);
  }
  static inline V select_pos(V a, V b) {
    V pos = _mm256_cmp_pd(a, _mm256_setzero_pd(), _CMP_GT_OQ);
    V nan = _mm256_cmp_pd(a, a, _CMP_UNORD_Q);
    return _mm256_or_pd(_mm256_and_pd(pos, b), _mm256_and_pd(nan, a));
  }
  static inline V sqrt(V a) { return _mm256_sqrt_pd(a); }
  static inline V div(V a, V b) { return _mm256_div_pd(a, b); }
  // exp(-a) as in Avx2F: shifter 1.5 * 2^52, a degree-12 Taylor polynomial (truncation
  // below 2e-16 relative) with coefficients pre-multiplied by 2^-600, scale 2^(n+600);
  // a is capped at 746 (exp(-746) is 0 in float64).
  static inline V exp_neg(V a) {
    a = _mm256_min_pd(_mm256_set1_pd(746.0), a);
    const V shifter = _mm256_set1_pd(6755399441055744.0);  // 1.5 * 2^52
    const V nf = _mm256_fnmadd_pd(a, _mm256_set1_pd(1.4426950408889634), shifter);
    const V n = _mm256_sub_pd(nf, shifter);
    V r = _mm256_fnmsub_pd(n, _mm256_set1_pd(6.93145751953125e-1), a);
    r = _mm256_fnmadd_pd(n, _mm256_set1_pd(1.42860682030941723212e-6), r);
    const double k = 2.4099198651028841e-181;  // 2^-600
    double f = 1.0 / 479001600.0;  // 1 / 12!
    V p = _mm256_set1_pd(f * k);
    for (int j = 11; j >= 0; --j) {
      f *= static_cast<double>(j + 1);  // f = 1 / j!
      p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(f * k));
    }
    const __m256i e = _mm256_add_epi64(_mm256_castpd_si256(nf), _mm256_set1_epi64x(1023 + 600));
    return _mm256_mul_pd(p, _mm256_castsi256_pd(_mm256_slli_epi64(e, 52)));
  }
  // as Avx2F::round_bits, on the float32 conversion (the reference rounds via float32)
  template <int SHIFT>
  static inline V round_bits(V a) {
    __m128i b = _mm_castps_si128(_mm256_cvtpd_ps(a));
    const __m128i lsb = _mm_and_si128(_mm_srli_epi32(b, SHIFT), _mm_set1_epi32(1));
    b = _mm_add_epi32(b, _mm_add_epi32(_mm_set1_epi32((1 << (SHIFT - 1)) - 1), lsb));
    b = _mm_and_si128(b, _mm_set1_epi32(~((1 << SHIFT) - 1)));
    return _mm256_cvtps_pd(_mm_castsi128_ps(b));
  }
  static inline double hsum(V a) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    return _mm_cvtsd_f64(s);
  }
};

template <typename T>
struct Ops;
template <>
struct Ops<float> : Avx2F {};
template <>
struct Ops<double> : Avx2D {};
#elif defined(KOPS_CPU_AVX512)
#include "kmv_simd_avx512.h"
#else
template <typename T>
struct Ops;
template <>
struct Ops<float> : PortableOps<float, 8> {};
template <>
struct Ops<double> : PortableOps<double, 4> {};
#endif

}  // namespace KOPS_CPU_ISA
}  // namespace kops_cpu
