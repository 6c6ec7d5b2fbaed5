// The two matrix products of the gradient (kmv_grad_xz) on one block x tile of q:
//   gx_block (rows x dp) -= q (rows x cols) @ zs_tile (cols x dp)
//   gz_tile  (cols x dp) -= q^T (cols x rows) @ xs_block (rows x dp)
// by the register-blocked FMA microkernel of the distances, so that they run at the width
// of the ISA in use (the BLAS torch links may use narrower vectors than the CPU has).
// xs, zs, gx and gz are row-major with dp = d rounded up to the vector width (zero padding),
// q is row-major with leading dimension ldq. Included by kmv_impl.h inside its namespace.
#pragma once

// C (R x NV vectors, leading dimension ldc) -= A (R x K) @ B (K x NV vectors, leading
// dimension ldb), where A(r, k) = a[r * ars + k * aks]: one microkernel for both products
// (q read along rows for gx, along columns for gz).
template <typename T, int R, int NV>
inline void micro_sub_product(const T* __restrict a, int64_t ars, int64_t aks, int64_t K,
                              const T* __restrict b, int64_t ldb, T* __restrict c, int64_t ldc) {
  using O = Ops<T>;
  using V = typename O::V;
  constexpr int W = O::W;
  V acc[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int h = 0; h < NV; ++h) acc[r][h] = O::load(c + r * ldc + h * W);
  for (int64_t k = 0; k < K; ++k) {
    V bv[NV];
#pragma GCC unroll 4
    for (int h = 0; h < NV; ++h) bv[h] = O::load(b + k * ldb + h * W);
    const T* ak = a + k * aks;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const V s = O::set1(-ak[r * ars]);
#pragma GCC unroll 4
      for (int h = 0; h < NV; ++h) acc[r][h] = O::fmadd(s, bv[h], acc[r][h]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int h = 0; h < NV; ++h) O::store(c + r * ldc + h * W, acc[r][h]);
}

// All rows of C in groups of kMR (the last group narrower), one chunk of NV vectors of dp.
template <typename T, int NV>
inline void sub_product_chunk(const T* a, int64_t ars, int64_t aks, int64_t rows, int64_t K,
                              const T* b, int64_t ldb, T* c, int64_t ldc) {
  int64_t r = 0;
  for (; r + kMR <= rows; r += kMR)
    micro_sub_product<T, kMR, NV>(a + r * ars, ars, aks, K, b, ldb, c + r * ldc, ldc);
  switch (rows - r) {
    case 5: return micro_sub_product<T, 5, NV>(a + r * ars, ars, aks, K, b, ldb, c + r * ldc, ldc);
    case 4: return micro_sub_product<T, 4, NV>(a + r * ars, ars, aks, K, b, ldb, c + r * ldc, ldc);
    case 3: return micro_sub_product<T, 3, NV>(a + r * ars, ars, aks, K, b, ldb, c + r * ldc, ldc);
    case 2: return micro_sub_product<T, 2, NV>(a + r * ars, ars, aks, K, b, ldb, c + r * ldc, ldc);
    case 1: return micro_sub_product<T, 1, NV>(a + r * ars, ars, aks, K, b, ldb, c + r * ldc, ldc);
    default: return;
  }
}

// C (rows x dp) -= A (rows x K) @ B (K x dp): dp in chunks of kNV vectors (B's chunk,
// K x kNV vectors, is swept once per row group from L1 / L2), a narrower last chunk.
template <typename T>
void sub_product(const T* a, int64_t ars, int64_t aks, int64_t rows, int64_t K, const T* b,
                 int64_t dp, T* c) {
  constexpr int W = Ops<T>::W;
  int64_t j = 0;
  for (; j + kNV * W <= dp; j += kNV * W) sub_product_chunk<T, kNV>(a, ars, aks, rows, K, b + j, dp, c + j, dp);
  const int64_t rest = (dp - j) / W;
  if (rest == 3) sub_product_chunk<T, (kNV > 3 ? 3 : 1)>(a, ars, aks, rows, K, b + j, dp, c + j, dp);
  if (rest == 2) sub_product_chunk<T, (kNV > 2 ? 2 : 1)>(a, ars, aks, rows, K, b + j, dp, c + j, dp);
  if (rest == 1) sub_product_chunk<T, 1>(a, ars, aks, rows, K, b + j, dp, c + j, dp);
}

// Both products of one tile (see the top of this file): q rows x cols with leading
// dimension ldq; xs, gx point at the block's first row, zs, gz at the tile's first column.
template <typename T>
void grad_products(const T* q, int64_t ldq, int64_t rows, int64_t cols, const T* xs, const T* zs,
                   int64_t dp, T* gx, T* gz) {
  sub_product<T>(q, ldq, 1, rows, cols, zs, dp, gx);  // A(r, k) = q[r, k]
  sub_product<T>(q, 1, ldq, cols, rows, xs, dp, gz);  // A(r, k) = q[k, r]
}
