// Interface between the torch binding (kmv_ops.cpp: checks, preparation, threading) and the
// ISA-specific tile kernels (kmv_avx512.cpp, kmv_avx2.cpp, kmv_portable.cpp). Plain pointers only, so the
// ISA translation units need no torch header.
//
// Layouts prepared by the binding (T = float or double, the accumulation dtype):
//   xp  packed scaled X in chunks of kc features (the last chunk shorter): chunk k0 holds
//       features k0 .. k0+len-1 (len = min(kc, d - k0)) of every row group, group after
//       group; row group g (rows g*MR .. g*MR+MR-1) of chunk k0 is a len x MR block at
//       xp + k0*groups*MR + g*len*MR, element (k, r) at [(k-k0)*MR + r]; rows past n are 0.
//       So one chunk of all the groups of a block is contiguous (read as one stream, which
//       the hardware prefetcher follows) and the chunk a micro-kernel call reads stays in L1.
//       kc >= d gives the plain layout: group g a d x MR block at xp + g*d*MR.
//   zp  packed scaled Z, the same chunked layout with panels of NR rows: panel p of chunk k0
//       at zp + k0*panels*NR + p*len*NR.
//   xn, zn  squared norms of the scaled rows, padded with 0 (GEMM-trick mode only).
//   vt  V transposed: c x m_pad, column j of row l at vt[l*m_pad + j], zero past m.
// Scaled means centred on the mean of z and multiplied by the kernel's scale, so that the
// kernel is f(u) of u = |xs - zs|^2 (see kops/kernels.py).
#pragma once

#include <cstdint>

#include "../kernel_codes.h"

namespace kops_cpu {

constexpr int kMR = 6;  // rows of X per micro-tile
// The forward's largest row block (groups of kMR rows; kmv_ops.cpp picks the block size):
// the bound of the per-row sums kmv_rows keeps on the stack for a single column of V.
constexpr int64_t kMaxForwardBlockGroups = 32;

// kernels: the shared list of csrc/kernel_codes.h (kGaussian, kLaplacian, ...)
using KernelId = kops::KernelCode;
#define KOPS_CPU_USING_KERNEL(name, code, smooth) using kops::k##name;
KOPS_FOR_EACH_KERNEL(KOPS_CPU_USING_KERNEL)
#undef KOPS_CPU_USING_KERNEL
// operand rounding of the precision modes (kops/precision.py)
enum Rounding : int { kIeee = 0, kTf32 = 1, kBf16 = 2 };

template <typename T>
struct TileArgs {
  const T* xp = nullptr;
  const T* zp = nullptr;
  const T* xn = nullptr;
  const T* zn = nullptr;
  const T* vt = nullptr;
  // wide V (c >= kWideC of the binding): V row-major as well (m_pad x cpad, zero padded), and
  // kmv_rows' acc then has cpad columns (value_product in kmv_impl.h)
  const T* vrow = nullptr;
  int64_t cpad = 0;
  int64_t n = 0, m = 0, d = 0, c = 0, m_pad = 0;
  int kernel = kGaussian;
  bool direct = false;  // squared distances by direct differences instead of the GEMM trick
  bool same = false;    // x and z are the same points: K_ii = f(0) exactly
  int rounding = kIeee;  // rounding of the kernel values before the product with V
  int64_t tile_panels = 16;  // panels of Z per tile (tile width tile_panels * NR)
  int64_t kc = 1 << 30;      // features per chunk of the packed layouts (see above)
  int64_t groups = 0, panels = 0;  // row groups of xp, panels of zp
  // the first row group xp (and xn) hold: the forward packs X one row block at a time, so
  // group g lies at xp's group g - xg0 (0 when xp holds all of X)
  int64_t xg0 = 0;
  // gradient only
  const T* g = nullptr;  // grad_out, n x c row-major (contiguous)
  bool noise_floor = false;  // u <= 16 eps (xn_i + zn_j) counts as u = 0 (non-smooth kernels)
};

// Per-ISA entry points. Rows are given in row groups [g0, g1) (of kMR rows), Z in panels
// [p0, p1) (of NR rows).
//   kmv_rows: acc ((g1-g0)*kMR x c, row-major; x cpad with a wide V) += K(rows, panels) @ V(panels).
//             work: at least (g1-g0)*kMR * tile_panels*NR elements.
//   grad_tile: q (rows x panels, leading dimension ldq) = f'(u_ij) <g_i, v_j> for one tile
//             (p1 - p0 <= tile_panels), with the same-points diagonal and noise floor applied;
//             rs[i] += sum_j q_ij, cs[j] += sum_i q_ij (i, j from the tile's first row, column).
struct IsaTable {
  const char* name;
  int nr_f32;
  int nr_f64;
  int kc_f32;  // features per chunk of the packed layouts this ISA's kernels expect
  int kc_f64;
  void (*kmv_rows_f32)(const TileArgs<float>&, int64_t g0, int64_t g1, int64_t p0, int64_t p1,
                       float* acc, float* work);
  void (*kmv_rows_f64)(const TileArgs<double>&, int64_t g0, int64_t g1, int64_t p0, int64_t p1,
                       double* acc, double* work);
  void (*grad_tile_f32)(const TileArgs<float>&, int64_t g0, int64_t g1, int64_t p0, int64_t p1,
                        float* q, int64_t ldq, float* rs, float* cs);
  void (*grad_tile_f64)(const TileArgs<double>&, int64_t g0, int64_t g1, int64_t p0, int64_t p1,
                        double* q, int64_t ldq, double* rs,
                        double* cs);
  //   kernel_tile: dst (rows x panels, leading dimension ldd) = K for one tile.
  void (*kernel_tile_f32)(const TileArgs<float>&, int64_t g0, int64_t g1, int64_t p0, int64_t p1,
                          float* dst, int64_t ldd);
  void (*kernel_tile_f64)(const TileArgs<double>&, int64_t g0, int64_t g1, int64_t p0,
                          int64_t p1, double* dst, int64_t ldd);
  //   exp_neg: out[i] = exp(-in[i]) by the tile kernels' vector exp (in >= 0 or NaN).
  void (*exp_neg_f32)(const float* in, float* out, int64_t len);
  void (*exp_neg_f64)(const double* in, double* out, int64_t len);
  //   fma_chains: 12 independent FMA chains of `reps` steps (12 * reps vector FMAs).
  float (*fma_chains_f32)(int64_t reps);
  double (*fma_chains_f64)(int64_t reps);
  int width_f32;  // floats per vector
  //   grad_products: gx -= q @ zs and gz -= q^T @ xs for one tile (kmv_grad_products.h);
  //   row-major xs, zs, gx, gz with dp (d padded to the vector width) columns, leading
  //   dimension ld.
  void (*grad_products_f32)(const float* q, int64_t ldq, int64_t rows, int64_t cols,
                            const float* xs, const float* zs, int64_t dp, int64_t ld, float* gx,
                            float* gz);
  void (*grad_products_f64)(const double* q, int64_t ldq, int64_t rows, int64_t cols,
                            const double* xs, const double* zs, int64_t dp, int64_t ld,
                            double* gx, double* gz);
  //   grad_products_small: the same two products for small d, with zs transposed (zst,
  //   D x cols, leading dimension ldz) and gz transposed (gzt, D x cols, leading dimension
  //   ldg), D = d rounded up to 1, 2, 3, 4, 6 or 8 (kmv_grad_products.h).
  void (*grad_products_small_f32)(const float* q, int64_t ldq, int64_t rows, int64_t cols,
                                  const float* xs, int64_t dp, const float* zst, int64_t ldz,
                                  int64_t D, float* gx, float* gzt, int64_t ldg);
  void (*grad_products_small_f64)(const double* q, int64_t ldq, int64_t rows, int64_t cols,
                                  const double* xs, int64_t dp, const double* zst, int64_t ldz,
                                  int64_t D, double* gx, double* gzt, int64_t ldg);
};

// Defined in kmv_portable.cpp (always), kmv_avx2.cpp and kmv_avx512.cpp (x86-64 builds with
// the AVX2 / AVX-512 flags; they return nullptr elsewhere).
const IsaTable* portable_table();
const IsaTable* avx2_table();
const IsaTable* avx512_table();

// The bf16 mode's forward pass on bf16 operands (kmv_avx512bf16.cpp, layouts there): the
// table of the same build for everything else, and kmv_rows on the bf16 pair layouts xb, zb.
struct Bf16Kernels {
  const char* name;
  const IsaTable* table;
  void (*kmv_rows)(const TileArgs<float>&, const uint32_t* xb, const uint32_t* zb, int64_t g0,
                   int64_t g1, int64_t p0, int64_t p1, float* acc, float* work);
};
// nullptr where the build or the compiler has no AVX512-BF16
const Bf16Kernels* avx512bf16_kernels();

// Defined in kmv_isa.cpp: the table in use (the widest ISA this CPU runs, unless
// KOPS_CPU_ISA=avx2 / portable asks for a narrower one), and the bf16 mode's kernels
// (nullptr unless the CPU has AVX512-BF16, the ISA in use is AVX-512 and KOPS_CPU_BF16 is not
// "emulate").
const IsaTable* selected_isa();
const Bf16Kernels* selected_bf16();

}  // namespace kops_cpu
