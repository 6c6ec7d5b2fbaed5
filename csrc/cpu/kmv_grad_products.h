// The two matrix products of the gradient (kmv_grad_xz) on one block x tile of q:
//   gx_block (rows x dp) -= q (rows x cols) @ zs_tile (cols x dp)
//   gz_tile  (cols x dp) -= q^T (cols x rows) @ xs_block (rows x dp)
// by the register-blocked FMA microkernel of the distances, so that they run at the width
// of the ISA in use (the BLAS torch links may use narrower vectors than the CPU has).
// xs, zs, gx and gz are row-major with dp = d rounded up to the vector width (zero padding)
// and leading dimension ld >= dp, q is row-major with leading dimension ldq. The binding picks
// ld and ldq of an odd number of cache lines (padded_ld in kmv_ops.cpp): at a power-of-two
// stride (d = 2048: 8 KiB) the rows a microkernel call sweeps all fall into the same few sets
// of the L1 cache and evict each other. Included by kmv_impl.h inside its namespace.
#pragma once

// C (R x NV vectors, leading dimension ldc) -= A (R x K) @ B (K x NV vectors, leading
// dimension ldb), where A(r, k) = a[r * ars + k * aks]: one microkernel for both products
// (q read along rows for gx, along columns for gz), and with kSub = false (C += A @ B) for
// the forward's product with a wide V (value_product in kmv_impl.h).
template <typename T, int R, int NV, bool kSub = true>
inline void micro_sub_product(const T* __restrict a, int64_t ars, int64_t aks, int64_t K,
                              const T* __restrict b, int64_t ldb, T* __restrict c, int64_t ldc) {
  using O = Ops<T>;
  using V = typename O::V;
  constexpr int W = O::W;
  // kSub: -C is accumulated (+= A B) and negated back at the end, so that the inner loop
  // broadcasts A straight from memory (negating each element there cost a scalar load and
  // an xor per broadcast)
  V acc[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int h = 0; h < NV; ++h) {
      const V cv = O::load(c + r * ldc + h * W);
      acc[r][h] = kSub ? O::sub(O::zero(), cv) : cv;
    }
  for (int64_t k = 0; k < K; ++k) {
    V bv[NV];
#pragma GCC unroll 4
    for (int h = 0; h < NV; ++h) bv[h] = O::load(b + k * ldb + h * W);
    const T* ak = a + k * aks;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const V s = O::set1(ak[r * ars]);
#pragma GCC unroll 4
      for (int h = 0; h < NV; ++h) acc[r][h] = O::fmadd(s, bv[h], acc[r][h]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int h = 0; h < NV; ++h) O::store(c + r * ldc + h * W, kSub ? O::sub(O::zero(), acc[r][h]) : acc[r][h]);
}

// All rows of C in groups of kMR (the last group narrower), one chunk of NV vectors of dp.
template <typename T, int NV, bool kSub>
inline void sub_product_chunk(const T* a, int64_t ars, int64_t aks, int64_t rows, int64_t K,
                              const T* b, int64_t ldb, T* c, int64_t ldc) {
  int64_t r = 0;
  for (; r + kMR <= rows; r += kMR)
    micro_sub_product<T, kMR, NV, kSub>(a + r * ars, ars, aks, K, b, ldb, c + r * ldc, ldc);
  switch (rows - r) {
    case 5: return micro_sub_product<T, 5, NV, kSub>(a + r * ars, ars, aks, K, b, ldb, c + r * ldc, ldc);
    case 4: return micro_sub_product<T, 4, NV, kSub>(a + r * ars, ars, aks, K, b, ldb, c + r * ldc, ldc);
    case 3: return micro_sub_product<T, 3, NV, kSub>(a + r * ars, ars, aks, K, b, ldb, c + r * ldc, ldc);
    case 2: return micro_sub_product<T, 2, NV, kSub>(a + r * ars, ars, aks, K, b, ldb, c + r * ldc, ldc);
    case 1: return micro_sub_product<T, 1, NV, kSub>(a + r * ars, ars, aks, K, b, ldb, c + r * ldc, ldc);
    default: return;
  }
}

// C (rows x dp) -= A (rows x K) @ B (K x dp) (kSub = false: +=), B and C with leading
// dimension ld: dp in chunks of kNV vectors (B's chunk, K x kNV vectors, is swept once per row
// group from L1 / L2), a narrower last chunk.
template <typename T, bool kSub = true>
void sub_product(const T* a, int64_t ars, int64_t aks, int64_t rows, int64_t K, const T* b,
                 int64_t dp, int64_t ld, T* c) {
  constexpr int W = Ops<T>::W;
  int64_t j = 0;
  for (; j + kNV * W <= dp; j += kNV * W)
    sub_product_chunk<T, kNV, kSub>(a, ars, aks, rows, K, b + j, ld, c + j, ld);
  const int64_t rest = (dp - j) / W;
  if (rest == 3) sub_product_chunk<T, (kNV > 3 ? 3 : 1), kSub>(a, ars, aks, rows, K, b + j, ld, c + j, ld);
  if (rest == 2) sub_product_chunk<T, (kNV > 2 ? 2 : 1), kSub>(a, ars, aks, rows, K, b + j, ld, c + j, ld);
  if (rest == 1) sub_product_chunk<T, 1, kSub>(a, ars, aks, rows, K, b + j, ld, c + j, ld);
}

// Both products of one tile (see the top of this file): q rows x cols with leading
// dimension ldq; xs, gx point at the block's first row, zs, gz at the tile's first column.
template <typename T>
void grad_products(const T* q, int64_t ldq, int64_t rows, int64_t cols, const T* xs, const T* zs,
                   int64_t dp, int64_t ld, T* gx, T* gz) {
  // A(r, k) = q[r, k], in chunks of kQC columns of q: zs's chunk (kQC x kNV vectors, 32 KiB
  // with float32) then stays in L1 while the block's row groups sweep it
  constexpr int64_t kQC = 32768 / (kNV * Ops<T>::W * static_cast<int64_t>(sizeof(T)));
  for (int64_t k0 = 0; k0 < cols; k0 += kQC)
    sub_product<T>(q + k0, ldq, 1, rows, cols - k0 < kQC ? cols - k0 : kQC, zs + k0 * ld, dp, ld, gx);
  sub_product<T>(q, 1, ldq, cols, rows, xs, dp, ld, gz);  // A(r, k) = q[k, r]
}

// Small d (the direct-difference and low-d cases, d <= kSmallGradD of the binding): both
// products in one pass over the rows of q, vectorised along the tile's columns, where the
// blocked product above would pad d to a whole vector and spend most of its work on zeros.
//   gx (rows x dp)     -= q @ zs:   per row, D accumulators over the columns, then a sum
//   gzt (D x cols, ldg) -= xs^T-weighted q:  gzt[k, j] -= sum_i q_ij xs_ik
// zst is zs transposed (D x cols, leading dimension ldz), xs row-major with dp >= D columns
// (zeros past d, as are the rows of zst past d, so D may round d up). R rows of q per pass
// share one load / store of gzt.
template <typename T, int D, int R>
inline void small_rows(const T* __restrict q, int64_t ldq, int64_t cols, const T* __restrict xs,
                       int64_t dp, const T* __restrict zst, int64_t ldz, T* __restrict gx,
                       T* __restrict gzt, int64_t ldg) {
  using O = Ops<T>;
  using V = typename O::V;
  constexpr int W = O::W;
  V acc[R][D];
  V xb[R][D];  // -xs_ik, so that gzt -= q x is one fused multiply-add
  for (int r = 0; r < R; ++r)
    for (int k = 0; k < D; ++k) acc[r][k] = O::zero(), xb[r][k] = O::set1(-xs[r * dp + k]);
  for (int64_t j = 0; j < cols; j += W) {
    V qv[R];
    for (int r = 0; r < R; ++r) qv[r] = O::load(q + r * ldq + j);
    for (int k = 0; k < D; ++k) {
      const V zv = O::load(zst + k * ldz + j);
      V g = O::load(gzt + k * ldg + j);
      for (int r = 0; r < R; ++r) {
        acc[r][k] = O::fmadd(qv[r], zv, acc[r][k]);
        g = O::fmadd(qv[r], xb[r][k], g);
      }
      O::store(gzt + k * ldg + j, g);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int k = 0; k < D; ++k) gx[r * dp + k] -= O::hsum(acc[r][k]);
}

template <typename T, int D>
void small_products_d(const T* q, int64_t ldq, int64_t rows, int64_t cols, const T* xs,
                      int64_t dp, const T* zst, int64_t ldz, T* gx, T* gzt, int64_t ldg) {
  constexpr int R = D <= 4 ? 2 : 1;  // two rows fit the register file up to D = 4
  int64_t i = 0;
  for (; i + R <= rows; i += R)
    small_rows<T, D, R>(q + i * ldq, ldq, cols, xs + i * dp, dp, zst, ldz, gx + i * dp, gzt, ldg);
  for (; i < rows; ++i)
    small_rows<T, D, 1>(q + i * ldq, ldq, cols, xs + i * dp, dp, zst, ldz, gx + i * dp, gzt, ldg);
}

// D: the template size the binding padded d to (small_grad_width); 0 for any other value.
template <typename T>
void grad_products_small(const T* q, int64_t ldq, int64_t rows, int64_t cols, const T* xs,
                         int64_t dp, const T* zst, int64_t ldz, int64_t D, T* gx, T* gzt,
                         int64_t ldg) {
  switch (D) {
    case 1: return small_products_d<T, 1>(q, ldq, rows, cols, xs, dp, zst, ldz, gx, gzt, ldg);
    case 2: return small_products_d<T, 2>(q, ldq, rows, cols, xs, dp, zst, ldz, gx, gzt, ldg);
    case 3: return small_products_d<T, 3>(q, ldq, rows, cols, xs, dp, zst, ldz, gx, gzt, ldg);
    case 4: return small_products_d<T, 4>(q, ldq, rows, cols, xs, dp, zst, ldz, gx, gzt, ldg);
    case 6: return small_products_d<T, 6>(q, ldq, rows, cols, xs, dp, zst, ldz, gx, gzt, ldg);
    case 8: return small_products_d<T, 8>(q, ldq, rows, cols, xs, dp, zst, ldz, gx, gzt, ldg);
    default: return;
  }
}
