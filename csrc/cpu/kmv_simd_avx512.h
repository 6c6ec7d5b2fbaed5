// AVX-512 vector types of the native CPU kernels (float x 16, double x 8): the same operations
// and the same numerics as Avx2F / Avx2D in kmv_simd.h, one register twice as wide. Included
// by kmv_simd.h inside namespace kops_cpu::KOPS_CPU_ISA, only in the translation unit built
// with the AVX-512 flags (kmv_avx512.cpp); <immintrin.h> is already included there.
#pragma once

// ---------------------------------------------------------------- AVX-512 float x 16
struct Avx512F {
  using V = __m512;
  static constexpr int W = 16;
  static inline V load(const float* p) { return _mm512_loadu_ps(p); }
  static inline void store(float* p, V a) { _mm512_storeu_ps(p, a); }
  static inline V set1(float s) { return _mm512_set1_ps(s); }
  static inline V zero() { return _mm512_setzero_ps(); }
  static inline V add(V a, V b) { return _mm512_add_ps(a, b); }
  static inline V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static inline V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static inline V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  // vmaxps returns its second operand when either is NaN: t second keeps NaN
  static inline V clamp0(V a) { return _mm512_max_ps(_mm512_setzero_ps(), a); }
  static inline V zero_if_le(V a, V b) {
    return _mm512_maskz_mov_ps(static_cast<__mmask16>(~_mm512_cmp_ps_mask(a, b, _CMP_LE_OQ)), a);
  }
  static inline V select_pos(V a, V b) {
    const __mmask16 pos = _mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_GT_OQ);
    const __mmask16 nan = _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
    return _mm512_mask_mov_ps(_mm512_maskz_mov_ps(pos, b), nan, a);
  }
  static inline V sqrt(V a) { return _mm512_sqrt_ps(a); }
  static inline V div(V a, V b) { return _mm512_div_ps(a, b); }
  // exp(-a), a >= 0 or NaN: the algorithm and coefficients of Avx2F::exp_neg
  static inline V exp_neg(V a) {
    a = _mm512_min_ps(_mm512_set1_ps(104.0f), a);  // vminps returns a when a is NaN
    const V shifter = _mm512_set1_ps(12582912.0f);  // 1.5 * 2^23
    const V nf = _mm512_fnmadd_ps(a, _mm512_set1_ps(1.44269504088896341f), shifter);
    const V n = _mm512_sub_ps(nf, shifter);
    V r = _mm512_fnmsub_ps(n, _mm512_set1_ps(0.693359375f), a);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    const float k = 5.42101086242752217e-20f;  // 2^-64
    V p = _mm512_set1_ps(1.383580151e-03f * k);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.375644684e-03f * k));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.166828841e-02f * k));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.666641086e-01f * k));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.999999106e-01f * k));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(k));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(k));
    const __m512i e = _mm512_add_epi32(_mm512_castps_si512(nf), _mm512_set1_epi32(127 + 64));
    return _mm512_mul_ps(p, _mm512_castsi512_ps(_mm512_slli_epi32(e, 23)));
  }
  template <int SHIFT>
  static inline V round_bits(V a) {
    __m512i b = _mm512_castps_si512(a);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, SHIFT), _mm512_set1_epi32(1));
    b = _mm512_add_epi32(b, _mm512_add_epi32(_mm512_set1_epi32((1 << (SHIFT - 1)) - 1), lsb));
    b = _mm512_and_si512(b, _mm512_set1_epi32(~((1 << SHIFT) - 1)));
    return _mm512_castsi512_ps(b);
  }
  static inline float hsum(V a) { return _mm512_reduce_add_ps(a); }
};

// ---------------------------------------------------------------- AVX-512 double x 8
struct Avx512D {
  using V = __m512d;
  static constexpr int W = 8;
  static inline V load(const double* p) { return _mm512_loadu_pd(p); }
  static inline void store(double* p, V a) { _mm512_storeu_pd(p, a); }
  static inline V set1(double s) { return _mm512_set1_pd(s); }
  static inline V zero() { return _mm512_setzero_pd(); }
  static inline V add(V a, V b) { return _mm512_add_pd(a, b); }
  static inline V sub(V a, V b) { return _mm512_sub_pd(a, b); }
  static inline V mul(V a, V b) { return _mm512_mul_pd(a, b); }
  static inline V fmadd(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static inline V clamp0(V a) { return _mm512_max_pd(_mm512_setzero_pd(), a); }
  static inline V zero_if_le(V a, V b) {
    return _mm512_maskz_mov_pd(static_cast<__mmask8>(~_mm512_cmp_pd_mask(a, b, _CMP_LE_OQ)), a);
  }
  static inline V select_pos(V a, V b) {
    const __mmask8 pos = _mm512_cmp_pd_mask(a, _mm512_setzero_pd(), _CMP_GT_OQ);
    const __mmask8 nan = _mm512_cmp_pd_mask(a, a, _CMP_UNORD_Q);
    return _mm512_mask_mov_pd(_mm512_maskz_mov_pd(pos, b), nan, a);
  }
  static inline V sqrt(V a) { return _mm512_sqrt_pd(a); }
  static inline V div(V a, V b) { return _mm512_div_pd(a, b); }
  // exp(-a): the algorithm and coefficients of Avx2D::exp_neg
  static inline V exp_neg(V a) {
    a = _mm512_min_pd(_mm512_set1_pd(746.0), a);
    const V shifter = _mm512_set1_pd(6755399441055744.0);  // 1.5 * 2^52
    const V nf = _mm512_fnmadd_pd(a, _mm512_set1_pd(1.4426950408889634), shifter);
    const V n = _mm512_sub_pd(nf, shifter);
    V r = _mm512_fnmsub_pd(n, _mm512_set1_pd(6.93145751953125e-1), a);
    r = _mm512_fnmadd_pd(n, _mm512_set1_pd(1.42860682030941723212e-6), r);
    const double k = 2.4099198651028841e-181;  // 2^-600
    double f = 1.0 / 479001600.0;  // 1 / 12!
    V p = _mm512_set1_pd(f * k);
    for (int j = 11; j >= 0; --j) {
      f *= static_cast<double>(j + 1);
      p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(f * k));
    }
    const __m512i e = _mm512_add_epi64(_mm512_castpd_si512(nf), _mm512_set1_epi64(1023 + 600));
    return _mm512_mul_pd(p, _mm512_castsi512_pd(_mm512_slli_epi64(e, 52)));
  }
  // as Avx512F::round_bits, on the float32 conversion (the reference rounds via float32)
  template <int SHIFT>
  static inline V round_bits(V a) {
    __m256i b = _mm256_castps_si256(_mm512_cvtpd_ps(a));
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, SHIFT), _mm256_set1_epi32(1));
    b = _mm256_add_epi32(b, _mm256_add_epi32(_mm256_set1_epi32((1 << (SHIFT - 1)) - 1), lsb));
    b = _mm256_and_si256(b, _mm256_set1_epi32(~((1 << SHIFT) - 1)));
    return _mm512_cvtps_pd(_mm256_castsi256_ps(b));
  }
  static inline double hsum(V a) { return _mm512_reduce_add_pd(a); }
};

template <typename T>
struct Ops;
template <>
struct Ops<float> : Avx512F {};
template <>
struct Ops<double> : Avx512D {};
