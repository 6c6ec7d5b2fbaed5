// Runs the CUDA kernels of csrc/cuda/kmv_kernels.cuh on the CPU, one std::thread per CUDA
// thread (include/cuda_runtime.h emulates the builtins), and compares them with a long-double
// reference. This checks the indexing, tiling, guards, padding, column chunks, z splits,
// strides and kernel profiles where no GPU is available; it says nothing about speed, and the
// device's own math functions (exp2f, rsqrtf) are replaced by the host's.
//
//   c++ -std=c++20 -O1 -pthread -Itests/cuda_emulation/include -Icsrc/cuda
//       tests/cuda_emulation/emulate.cpp -o emulate  &&  ./emulate
//
// Prints one line per case and exits 1 if any case fails.
#include <cmath>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#include "kmv_kernels.cuh"
#include "kmv_plan.h"

using kops::cuda::KernelKind;
using kops::cuda::detail::kThreads;

namespace {

template <typename Kernel, typename... Args>
void launch(dim3 grid, Kernel kernel, Args... args) {
  gridDim = grid;
  blockDim = dim3{unsigned(kThreads), 1, 1};
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        std::barrier<> barrier(kThreads);
        emu_barrier = &barrier;
        std::vector<std::thread> threads;
        for (int t = 0; t < kThreads; ++t)
          threads.emplace_back([=] {
            threadIdx = dim3{unsigned(t), 0, 0};
            blockIdx = dim3{bx, by, bz};
            kernel(args...);
          });
        for (auto& th : threads) th.join();
      }
}

using LD = long double;

LD profile(KernelKind k, LD u) {
  const LD t = std::sqrt(u);
  switch (k) {
    case KernelKind::kGaussian: return std::exp(-u);
    case KernelKind::kLaplacian: return std::exp(-t);
    case KernelKind::kMatern32: return (1 + t) * std::exp(-t);
    case KernelKind::kCauchy: return 1 / (1 + u);
    default: return (1 + t + u / 3) * std::exp(-t);
  }
}

LD derivative(KernelKind k, LD u) {
  const LD t = std::sqrt(u);
  switch (k) {
    case KernelKind::kGaussian: return -std::exp(-u);
    case KernelKind::kLaplacian: return t > 0 ? std::exp(-t) / (-2 * t) : 0;
    case KernelKind::kMatern32: return -0.5L * std::exp(-t);
    case KernelKind::kCauchy: return -1 / ((1 + u) * (1 + u));
    default: return -(1 + t) * std::exp(-t) / 6;
  }
}

double scale_of(KernelKind k, double bandwidth) {
  switch (k) {
    case KernelKind::kGaussian: return 1.0 / (bandwidth * std::sqrt(2.0));
    case KernelKind::kLaplacian: return 1.0 / bandwidth;
    case KernelKind::kMatern32: return std::sqrt(3.0) / bandwidth;
    case KernelKind::kCauchy: return 1.0 / bandwidth;
    default: return std::sqrt(5.0) / bandwidth;
  }
}

// A strided matrix: element (i, k) at data[i * rs + k * cs].
template <typename T>
struct Mat {
  std::vector<T> data;
  int64_t rows, cols, rs, cs;
  T& at(int64_t i, int64_t k) { return data[i * rs + k * cs]; }
  T at(int64_t i, int64_t k) const { return data[i * rs + k * cs]; }
};

// layout 0: row-major padded rows; 1: column-major.
template <typename T>
Mat<T> random_mat(int64_t rows, int64_t cols, int layout, std::mt19937_64& rng, double offset = 0) {
  Mat<T> a;
  a.rows = rows;
  a.cols = cols;
  if (layout == 0) {
    a.rs = cols + 3;
    a.cs = 1;
  } else {
    a.rs = 1;
    a.cs = rows;
  }
  a.data.assign(size_t(rows * cols + 3 * rows + 8), T(std::nan("")));  // NaN in the padding
  std::normal_distribution<double> normal(0.0, 1.0);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t k = 0; k < cols; ++k) a.at(i, k) = T(normal(rng) + offset);
  return a;
}

int failures = 0;

void report(const char* what, double err, double tol) {
  const bool ok = err <= tol;  // false for NaN
  std::printf("%-72s error %.2e (tol %.0e) %s\n", what, err, tol, ok ? "ok" : "FAIL");
  if (!ok) ++failures;
}

template <typename T, KernelKind K, int D, int CC, int RFORCE = 0>
void check_kmv(int64_t n, int64_t m, int d, int64_t c, int layout, int64_t per_split,
               std::mt19937_64& rng, double offset = 0) {
  constexpr int R = RFORCE > 0 ? RFORCE : kops::cuda::detail::rows_per_thread<T, D, CC>();
  const double bw = std::sqrt(double(d)) + 0.5;
  const double scale = scale_of(K, bw), alpha = -1.5;
  Mat<T> x = random_mat<T>(n, d, layout, rng, offset);
  Mat<T> z = random_mat<T>(m, d, 1 - layout, rng, offset);
  Mat<T> v = random_mat<T>(m, c, layout, rng);
  Mat<T> out = random_mat<T>(n, c, 0, rng);
  const Mat<T> init = out;
  if (m > 1)
    for (int k = 0; k < d; ++k) z.at(1, k) = x.at(0, k);  // x_0 == z_1: a distance of exactly 0
  const int64_t splits = (m + per_split - 1) / per_split;
  std::vector<T> partial(splits > 1 ? size_t(splits * n * c) : 0, T(std::nan("")));
  const dim3 grid{unsigned((n + kThreads * R - 1) / (kThreads * R)), unsigned((c + CC - 1) / CC),
                  unsigned(splits)};
  launch(grid, kops::cuda::detail::kmv_kernel<T, K, D, CC, RFORCE>, (const T*)x.data.data(), x.rs,
         x.cs,
         (const T*)z.data.data(), z.rs, z.cs, (const T*)v.data.data(), v.rs, v.cs,
         out.data.data(), out.rs, out.cs, splits > 1 ? partial.data() : (T*)nullptr, n, m, d, c,
         per_split, T(kops::cuda::detail::profile_coef<T>(K, scale)), T(alpha));
  if (splits > 1)  // a few blocks, so that the grid-stride loop runs more than once
    launch(dim3{3, 1, 1}, kops::cuda::detail::reduce_splits<T>, (const T*)partial.data(), splits,
           n, c, out.data.data(), out.rs, out.cs);
  double err = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t q = 0; q < c; ++q) {
      LD ref = 0, mag = 0;
      for (int64_t j = 0; j < m; ++j) {
        LD s2 = 0;
        for (int k = 0; k < d; ++k) {
          const LD diff = LD(x.at(i, k)) - LD(z.at(j, k));
          s2 += diff * diff;
        }
        const LD kv = profile(K, s2 * scale * scale);
        ref += kv * v.at(j, q);
        mag += kv * std::fabs(LD(v.at(j, q)));
      }
      const LD want = LD(init.at(i, q)) + alpha * ref;
      const LD scale_iq = std::fabs(alpha) * mag + std::fabs(LD(init.at(i, q))) + 1e-300L;
      const LD e = std::fabs(LD(out.at(i, q)) - want) / scale_iq;
      err = std::isnan(double(e)) || std::isnan(err) ? NAN : std::max(err, double(e));
    }
  char what[200];
  std::snprintf(what, sizeof what,
                "kmv  %-6s k%d D=%-2d CC=%-2d R=%d n=%lld m=%lld d=%d c=%lld layout=%d splits=%lld",
                sizeof(T) == 4 ? "f32" : "f64", int(K), D, CC, R, (long long)n, (long long)m, d,
                (long long)c, layout, (long long)splits);
  report(what, err, sizeof(T) == 4 ? 1e-5 : 1e-11);
}

template <typename T, KernelKind K, int D, int CC>
void check_grad(int64_t n, int64_t m, int d, int c, int64_t per_split, std::mt19937_64& rng) {
  constexpr int R = kops::cuda::detail::grad_rows_per_thread<T, D, CC>();
  const double bw = std::sqrt(double(d)) + 0.5;
  const double scale = scale_of(K, bw);
  Mat<T> x = random_mat<T>(n, d, 0, rng), z = random_mat<T>(m, d, 1, rng);
  Mat<T> v = random_mat<T>(m, c, 0, rng), g = random_mat<T>(n, c, 1, rng);
  for (int k = 0; k < d; ++k) z.at(0, k) = x.at(0, k);  // coincident points (Laplacian at r = 0)
  Mat<T> gx = random_mat<T>(n, d, 0, rng);
  for (int64_t i = 0; i < n; ++i)
    for (int k = 0; k < d; ++k) gx.at(i, k) = T(0);
  const int64_t splits = (m + per_split - 1) / per_split;
  std::vector<T> partial(splits > 1 ? size_t(splits * n * d) : 0, T(std::nan("")));
  const dim3 grid{unsigned((n + kThreads * R - 1) / (kThreads * R)), 1u, unsigned(splits)};
  launch(grid, kops::cuda::detail::kmv_grad_kernel<T, K, D, CC>, (const T*)x.data.data(), x.rs,
         x.cs, (const T*)z.data.data(), z.rs, z.cs, (const T*)v.data.data(), v.rs, v.cs,
         (const T*)g.data.data(), g.rs, g.cs, gx.data.data(), gx.rs, gx.cs,
         splits > 1 ? partial.data() : (T*)nullptr, n, m, d, c, per_split,
         T(kops::cuda::detail::profile_coef<T>(K, scale)), T(2 * scale * scale));
  if (splits > 1)
    launch(dim3{2, 1, 1}, kops::cuda::detail::reduce_splits<T>, (const T*)partial.data(), splits,
           n, int64_t(d), gx.data.data(), gx.rs, gx.cs);
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<LD> want(d, 0);
    for (int64_t j = 0; j < m; ++j) {
      LD s2 = 0, dot = 0;
      for (int k = 0; k < d; ++k) {
        const LD diff = LD(x.at(i, k)) - LD(z.at(j, k));
        s2 += diff * diff;
      }
      for (int q = 0; q < c; ++q) dot += LD(g.at(i, q)) * v.at(j, q);
      const LD w = derivative(K, s2 * scale * scale) * dot * 2 * scale * scale;
      for (int k = 0; k < d; ++k) want[k] += w * (LD(x.at(i, k)) - z.at(j, k));
    }
    for (int k = 0; k < d; ++k) {
      num += double((gx.at(i, k) - want[k]) * (gx.at(i, k) - want[k]));
      den += double(want[k] * want[k]);
    }
  }
  char what[200];
  std::snprintf(what, sizeof what,
                "grad %-6s k%d D=%-2d CC=%-2d n=%lld m=%lld d=%d c=%d splits=%lld",
                sizeof(T) == 4 ? "f32" : "f64", int(K), D, CC, (long long)n, (long long)m, d, c,
                (long long)splits);
  report(what, std::sqrt(num / den), sizeof(T) == 4 ? 1e-5 : 1e-11);
}

// The split planner (host code of kmv_dispatch.cuh, reproduced here through its header).
void check_plans() {
  using kops::cuda::detail::plan_splits;
  int bad = 0;
  // 20 row blocks on 132 SMs x 5 blocks: split until whole waves are filled.
  auto p = plan_splits(20, 20000, 256, 132, 5, 20000, 4, -1);
  bad += !(p.splits > 1 && p.splits * 20 <= 4 * 660 && p.per_split % 256 == 0 &&
           p.splits * p.per_split >= 20000 && (p.splits - 1) * p.per_split < 20000 &&
           p.workspace == p.splits * 20000 * 4);
  // A full wave already: no split. No workspace given: no split.
  bad += plan_splits(700, 1000000, 256, 132, 5, 700000, 4, -1).splits != 1;
  p = plan_splits(20, 20000, 256, 132, 5, 20000, 4, 0);
  bad += !(p.splits == 1 && p.per_split == 20000 && p.workspace == 0);
  // m within one tile: nothing to split. Workspace cap: huge outputs are not split.
  bad += plan_splits(1, 100, 256, 132, 5, 1, 4, -1).splits != 1;
  bad += plan_splits(1, 1 << 20, 256, 132, 5, int64_t(1) << 27, 4, -1).splits != 1;
  std::printf("%-72s %s\n", "plan_splits", bad ? "FAIL" : "ok");
  failures += bad;
}

}  // namespace

int main() {
  std::mt19937_64 rng(12345);
  constexpr auto G = KernelKind::kGaussian, L = KernelKind::kLaplacian, M3 = KernelKind::kMatern32,
                 M5 = KernelKind::kMatern52, C = KernelKind::kCauchy;
  // kmv: awkward n, m (partial row blocks and z tiles), d below the bucket, c across chunks,
  // both layouts, unsplit and split z ranges (including splits that are not whole tiles).
  check_kmv<float, G, 3, 1>(1030, 300, 1, 1, 0, 300, rng);
  check_kmv<float, G, 3, 1>(77, 301, 3, 1, 1, 64, rng, 100.0);  // offset data: no cancellation
  check_kmv<float, L, 4, 16>(130, 257, 4, 3, 1, 257, rng);
  check_kmv<float, M3, 8, 16>(129, 200, 5, 17, 0, 77, rng);
  check_kmv<float, M5, 16, 1>(300, 129, 13, 1, 1, 129, rng);
  check_kmv<float, G, 32, 16>(257, 100, 29, 16, 0, 50, rng);
  check_kmv<float, L, 64, 1>(260, 90, 64, 1, 0, 90, rng);
  check_kmv<float, M5, 64, 16>(131, 70, 33, 5, 1, 33, rng);
  check_kmv<float, G, 16, 1, 1>(300, 200, 9, 1, 0, 64, rng);  // one-row-per-thread baseline
  check_kmv<double, G, 4, 1>(513, 130, 2, 1, 0, 64, rng);
  check_kmv<double, L, 16, 16>(129, 65, 16, 20, 1, 65, rng);
  check_kmv<double, M3, 64, 1>(130, 40, 40, 1, 0, 13, rng);
  check_kmv<float, C, 8, 16>(131, 90, 6, 3, 1, 90, rng);
  check_kmv<double, C, 4, 1>(70, 33, 3, 1, 0, 33, rng);
  // gradients: D in {8, 32}, CC in {4, 16}
  check_grad<float, G, 8, 4>(300, 130, 3, 1, 130, rng);
  check_grad<float, L, 32, 16>(130, 70, 20, 11, 32, rng);
  check_grad<double, M3, 8, 4>(129, 66, 8, 4, 66, rng);
  check_grad<double, M5, 32, 16>(129, 40, 32, 16, 16, rng);
  check_grad<double, L, 8, 4>(140, 50, 7, 2, 50, rng);
  check_grad<float, C, 8, 4>(100, 60, 5, 3, 60, rng);
  check_plans();
  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "passed", failures);
  return failures ? 1 : 0;
}
