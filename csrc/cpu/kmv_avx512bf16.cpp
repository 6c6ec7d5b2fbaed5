// The bf16 precision mode on CPUs with AVX512-BF16: the distance products of the forward pass
// on bf16 operands with float32 accumulation (vdpbf16ps: two products per lane and
// instruction), the same contract as the GPU's bf16 mode and the same numbers as its
// emulation (the operands are rounded to bf16 either way; only the summation order differs).
// CMake compiles this file alone with the AVX-512 flags plus -mavx512bf16; the binding calls
// it only after checking at run time that the CPU has AVX512-BF16.
//
// Layouts (built by the binding from the float32 packed layouts of kmv_kernels.h, whose
// values are already rounded to bf16): the features come in pairs, feature 2p in the low and
// 2p+1 in the high half of a 32-bit word. Row group g of X is a dh x kMR block of words at
// xb + g*dh*kMR (dh = ceil(d / 2)); panel p of Z is a dh x NR block at zb + p*dh*NR.
#include "kmv_kernels.h"

#if defined(__AVX512F__) && defined(__AVX512BF16__) && defined(__AVX512BW__) && \
    defined(__AVX512DQ__) && defined(__AVX512VL__) && defined(__FMA__)
#define KOPS_CPU_AVX512 1
#define KOPS_CPU_ISA avx512bf16
#include "kmv_impl.h"

namespace kops_cpu {
namespace avx512bf16 {

// As micro_gemm (kmv_impl.h), k in pairs: acc += x_2p z_2p + x_2p+1 z_2p+1 per instruction.
template <int KERN>
inline void micro_gemm_bf16(const uint32_t* __restrict xg, const uint32_t* __restrict zpn,
                            int64_t dh, const float* __restrict xn6, const float* __restrict zn,
                            float* __restrict dst, int64_t ldd, bool resume, bool last) {
  using O = Ops<float>;
  using V = O::V;
  constexpr int W = O::W;
  constexpr int NR = kNV * W;
  V acc[kMR][kNV];
#pragma GCC unroll 8
  for (int r = 0; r < kMR; ++r)
#pragma GCC unroll 4
    for (int h = 0; h < kNV; ++h) acc[r][h] = resume ? O::load(dst + r * ldd + h * W) : O::zero();
  for (int64_t k = 0; k < dh; ++k) {
    __m512bh z[kNV];
#pragma GCC unroll 4
    for (int h = 0; h < kNV; ++h) z[h] = (__m512bh)_mm512_loadu_si512(zpn + k * NR + h * W);
    const uint32_t* xk = xg + k * kMR;
#pragma GCC unroll 8
    for (int r = 0; r < kMR; ++r) {
      const __m512bh b = (__m512bh)_mm512_set1_epi32(static_cast<int>(xk[r]));
#pragma GCC unroll 4
      for (int h = 0; h < kNV; ++h) acc[r][h] = _mm512_dpbf16_ps(acc[r][h], b, z[h]);
    }
  }
  float* park = dst;
  int64_t ldp = ldd;
  alignas(64) float buf[kMR * NR];
  if (last) park = buf, ldp = NR;
#pragma GCC unroll 8
  for (int r = 0; r < kMR; ++r)
#pragma GCC unroll 4
    for (int h = 0; h < kNV; ++h) O::store(park + r * ldp + h * W, acc[r][h]);
  if (!last) return;
  const V m2 = O::set1(-2.0f);
#pragma GCC unroll 1
  for (int r = 0; r < kMR; ++r) {
    const V xr = O::set1(xn6[r]);
#pragma GCC unroll 4
    for (int h = 0; h < kNV; ++h) {
      const V s = O::add(xr, O::load(zn + h * W));
      finish<float, KERN, kStoreKernelBf16>(O::clamp0(O::fmadd(m2, O::load(buf + r * NR + h * W), s)),
                                            dst + r * ldd + h * W);
    }
  }
}

// As distance_tile with the GEMM trick (d > kDirectMaxD), on the bf16 pair layout.
template <int KERN>
void distance_tile_bf16(const TileArgs<float>& a, const uint32_t* xb, const uint32_t* zb, int64_t g0,
                        int64_t g1, int64_t p0, int64_t p1, float* dst, int64_t ldd) {
  constexpr int NR = kNV * Ops<float>::W;
  const int64_t dh = (a.d + 1) / 2;
  constexpr int64_t kPC = 64;  // pairs per chunk: a panel's chunk is 16 KiB, as in distance_tile
  for (int64_t k0 = 0; k0 < dh; k0 += kPC) {
    const int64_t kc = imin(kPC, dh - k0);
    const bool resume = k0 > 0, last = k0 + kc >= dh;
    for (int64_t p = p0; p < p1; ++p) {
      const uint32_t* zpn = zb + p * dh * NR + k0 * NR;
      float* col = dst + (p - p0) * NR;
      for (int64_t g = g0; g < g1; ++g)
        micro_gemm_bf16<KERN>(xb + g * dh * kMR + k0 * kMR, zpn, kc, a.xn + g * kMR, a.zn + p * NR,
                              col + (g - g0) * kMR * ldd, ldd, resume, last);
    }
  }
  if (a.same) {
    const int64_t r0 = g0 * kMR, c0 = p0 * NR, c1 = p1 * NR;
    const int64_t i_hi = imin(g1 * kMR, a.n);
    for (int64_t i = r0 > c0 ? r0 : c0; i < i_hi && i < c1; ++i) dst[(i - r0) * ldd + (i - c0)] = 1.0f;
  }
}

template <int KERN>
void kmv_rows_bf16_k(const TileArgs<float>& a, const uint32_t* xb, const uint32_t* zb, int64_t g0,
                     int64_t g1, int64_t p0, int64_t p1, float* acc, float* work) {
  constexpr int NR = kNV * Ops<float>::W;
  const int64_t ldk = a.tile_panels * NR;
  const int64_t rows = imin(g1 * kMR, a.n) - g0 * kMR;
  if (rows <= 0) return;
  for (int64_t t0 = p0; t0 < p1; t0 += a.tile_panels) {
    const int64_t t1 = imin(t0 + a.tile_panels, p1);
    distance_tile_bf16<KERN>(a, xb, zb, g0, g1, t0, t1, work, ldk);
    value_product<float>(a, work, ldk, rows, t0 * NR, (t1 - t0) * NR, acc);
  }
}

void kmv_rows_bf16(const TileArgs<float>& a, const uint32_t* xb, const uint32_t* zb, int64_t g0,
                   int64_t g1, int64_t p0, int64_t p1, float* acc, float* work) {
  switch (a.kernel) {
#define KOPS_CASE(name, code, smooth) \
    case k##name: return kmv_rows_bf16_k<k##name>(a, xb, zb, g0, g1, p0, p1, acc, work);
    KOPS_FOR_EACH_KERNEL(KOPS_CASE)
#undef KOPS_CASE
    default: return;  // unknown codes are refused by the binding
  }
}

}  // namespace avx512bf16

const Bf16Kernels* avx512bf16_kernels() {
  static const Bf16Kernels kernels = {"avx512_bf16", avx512bf16::make_table("avx512"),
                                      &avx512bf16::kmv_rows_bf16};
  return &kernels;
}
}  // namespace kops_cpu
#else
namespace kops_cpu {
const Bf16Kernels* avx512bf16_kernels() { return nullptr; }
}  // namespace kops_cpu
#endif
