// Native CPU kernel products: private ops kops::_cpu_kmv_accumulate, kops::_cpu_kmv_grad_xz
// and kops::_cpu_kernel_matrix (called by kops/backends/cpu_native.py), plus kops::_cpu_isa
// (the ISA selection and the other probes are in kmv_isa.cpp).
//
// This file checks the arguments, prepares the inputs in the accumulation dtype
// (centre on the mean of z, multiply by the kernel's scale, squared norms and packing into the
// layouts of kmv_kernels.h in one pass, all O((n + m) d)), and spreads row blocks of X over threads with
// at::parallel_for (a shared task counter gives dynamic load balance, which matters on a
// loaded machine). The O(n m d) work is done by the tile kernels of the selected ISA.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kmv_kernels.h"

namespace kops_cpu {
namespace {

// Squared distances by direct differences up to this d (no GEMM-trick cancellation; at
// small d the exp dominates the cost either way). Same threshold as the torch reference,
// so that the Laplacian's noise-floor rule applies to the same cases.
constexpr int64_t kDirectMaxD = 4;
// Row groups (of kMR rows) per task and Z panels per tile: a block x tile of kernel values
// (48 x 256 floats, 48 KiB) and the packed panels stay in L2.
constexpr int64_t kBlockGroups = 8;
// From d = 256 on, every row block streams all of Z (m x d) from L3 once per block: 32 groups
// (192 rows) cut that traffic four-fold, worth 10-30% at d = 784 and 2048 (measured with 1
// thread; the block x tile buffer, 192 KiB, still fits L2).
constexpr int64_t kLargeDBlockGroups = kMaxForwardBlockGroups;
constexpr int64_t kLargeD = 256;
static_assert(kBlockGroups <= kMaxForwardBlockGroups, "kmv_rows keeps per-row sums for at most kMaxForwardBlockGroups groups");
// Tasks per thread the forward aims at (see kmv_accumulate_impl).
constexpr int64_t kTasksPerThread = 16;
constexpr int64_t kTileBytes = 1024;  // tile width in bytes of one row: 256 floats, 128 doubles
// From this many columns of V on, the forward's product with V runs on V row-major,
// vectorised along c (value_product in kmv_impl.h).
constexpr int64_t kWideC = 16;
// Gradient: blocks of 384 rows (the inner dimension of the q^T @ xs product, which reads and
// writes its tile of gz once per block) x tiles of 256 columns (q: 400 KiB, in L2). Against
// 96 x 512 (1 thread, time per pair of the tile loop): 12-20% less at d = 784, 0-5% at d = 256
// and 2048, equal at d = 64.
constexpr int64_t kGradBlockGroups = 64;
constexpr int64_t kGradTileCols = 256;
// Tasks per thread the gradient aims at (Z is split when there are fewer row blocks).
constexpr int64_t kGradTasksPerThread = 8;
// Up to this d the gradient's two products run as one pass over q (grad_products_small),
// with d rounded up to one of the template sizes below. From d = 9 on the blocked products
// are faster (1 thread, n = m = 4000: d = 16 0.0165 -> 0.0114 s, d = 12 0.0114 -> 0.0108 s;
// at d = 5 .. 8 the one pass is 1.25-1.45x faster than them).
constexpr int64_t kSmallGradD = 8;
int64_t small_grad_width(int64_t d) {
  for (int64_t w : {1, 2, 3, 4, 6, 8})
    if (d <= w && d <= kSmallGradD) return w;
  return 0;
}

// Float32 packed blocks (groups x d x w, kmv_kernels.h) as bf16 pairs (groups x dh x w words,
// kmv_avx512bf16.cpp): the values are already rounded to bf16, so the high half of each
// float is exact.
at::Tensor pack_pairs(const at::Tensor& packed) {
  const int64_t groups = packed.size(0), d = packed.size(1), w = packed.size(2), dh = (d + 1) / 2;
  at::Tensor out = at::empty({groups, dh, w}, packed.options().dtype(at::kInt));
  const uint32_t* src = reinterpret_cast<const uint32_t*>(packed.data_ptr<float>());
  uint32_t* dst = reinterpret_cast<uint32_t*>(out.data_ptr<int32_t>());
  at::parallel_for(0, groups, 16, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const uint32_t* s = src + g * d * w;
      uint32_t* o = dst + g * dh * w;
      for (int64_t p = 0; p < dh; ++p)
        for (int64_t q = 0; q < w; ++q) {
          const uint32_t lo = s[2 * p * w + q] >> 16;
          const uint32_t hi = 2 * p + 1 < d ? s[(2 * p + 1) * w + q] >> 16 : 0u;
          o[p * w + q] = lo | (hi << 16);
        }
    }
  });
  return out;
}

struct KernelInfo {
  int id;
  double scale;
  bool smooth_at_zero;
};

// The kernel's code (csrc/kernel_codes.h, Kernel.code in kops/kernels.py) and input scale, as
// the Python backend passes them; the smoothness at 0 comes from the shared kernel list.
KernelInfo kernel_info(int64_t code, double scale) {
  TORCH_CHECK(std::isfinite(scale) && scale > 0.0,
              "kops native CPU kernel: scale must be a positive finite number, got ", scale);
  TORCH_CHECK(kops::valid_kernel_code(code), "kops native CPU kernel: unknown kernel code ", code,
              " (expected 0 .. ", kops::kNumKernels - 1, ", see kops/kernels.py)");
  return {static_cast<int>(code), scale, kops::kernel_smooth_at_zero(code)};
}

void check_inputs(const at::Tensor& x, const at::Tensor& z, const at::Tensor& v) {
  TORCH_CHECK(x.device().is_cpu() && z.device().is_cpu() && v.device().is_cpu(),
              "kops native CPU kernel: x, z and v must be CPU tensors");
  TORCH_CHECK(x.dim() == 2 && z.dim() == 2 && v.dim() == 2,
              "kops native CPU kernel: x (n, d), z (m, d) and v (m, c) must be 2-D, got ",
              x.sizes(), ", ", z.sizes(), ", ", v.sizes());
  TORCH_CHECK(x.size(1) == z.size(1), "kops native CPU kernel: x and z must have the same d, got ",
              x.sizes(), " and ", z.sizes());
  TORCH_CHECK(x.size(1) >= 1, "kops native CPU kernel: d must be >= 1");
  TORCH_CHECK(v.size(0) == z.size(0), "kops native CPU kernel: v must have as many rows as z, got ",
              v.sizes(), " and ", z.sizes());
  const auto dt = x.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble,
              "kops native CPU kernel: dtype must be float32 or float64, got ", dt,
              " (float16 / bfloat16 are upcast to float32 by the Python backend)");
  TORCH_CHECK(z.scalar_type() == dt && v.scalar_type() == dt,
              "kops native CPU kernel: x, z and v must have one dtype, got ", dt, ", ",
              z.scalar_type(), ", ", v.scalar_type());
}

// x and z are the same points (same memory, shape and strides): the diagonal is exact 0.
bool same_points(const at::Tensor& x, const at::Tensor& z) {
  return x.data_ptr() == z.data_ptr() && x.sizes() == z.sizes() && x.strides() == z.strides();
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A leading dimension of at least `cols` elements of `size` bytes whose rows lie an odd
// number of 64-byte lines apart when they are line multiples: at a power-of-two stride
// (d = 2048 floats: 8 KiB) the rows one microkernel call sweeps all map to the same few L1
// sets and evict each other (the gradient's tile loop at d = 2048, 1 thread: 1.12 -> 0.97 s).
int64_t padded_ld(int64_t cols, int64_t size) {
  return cols * size % 128 == 0 ? cols + 64 / size : cols;
}

int rounding_of(const std::string& precision) {
  if (precision == "ieee") return kIeee;
  if (precision == "tf32") return kTf32;
  if (precision == "bf16") return kBf16;
  TORCH_CHECK(false, "kops native CPU kernel: unknown precision '", precision,
              "' (expected ieee, tf32 or bf16)");
}

// An operand rounded as the precision mode does (kops/precision.py): through float32, round
// to nearest even at 10 (tf32) or 7 (bf16) mantissa bits; non-finite values unchanged.
template <typename T>
inline T round_operand(T value, int rounding) {
  if (rounding == kIeee || !std::isfinite(value)) return value;
  float f = static_cast<float>(value);
  uint32_t b;
  std::memcpy(&b, &f, 4);
  const int shift = rounding == kTf32 ? 13 : 16;
  b = (b + ((1u << (shift - 1)) - 1u) + ((b >> shift) & 1u)) & ~((1u << shift) - 1u);
  std::memcpy(&f, &b, 4);
  return static_cast<T>(f);
}

// The rows of a (r x d, any strides) to be scaled: (a - center) * scale, rounded as the
// precision mode does. Same operation order as the torch reference's (a - center) * scale
// (the centre itself may differ in the last bit).
template <typename T>
struct ScaledRows {
  const T* src;
  int64_t s0, s1, r, d;
  const T* center;
  T scale;
  int rounding;
  ScaledRows(const at::Tensor& a, const at::Tensor& c, double sc, int rnd)
      : src(a.data_ptr<T>()), s0(a.stride(0)), s1(a.stride(1)), r(a.size(0)), d(a.size(1)),
        center(c.data_ptr<T>()), scale(static_cast<T>(sc)), rounding(rnd) {}
};

// Row groups [g0, g1) of `w` rows, scaled, into the packed layout of kmv_kernels.h (chunks of
// kc features: chunk k0, group g is a len x w block at k0*groups*w + (g - base)*len*w, for a
// layout of `groups` groups from group `base` on; zero past the last row), their squared norms
// into nrm[(g - base) * w + q] (when given) and the rows row-major into rdst (row i at i * ld,
// zero past d and past the last row; when given).
template <typename T>
void pack_groups(const ScaledRows<T>& a, int64_t w, int64_t kc, int64_t g0, int64_t g1,
                 int64_t base, int64_t groups, T* dst, T* nrm, T* rdst, int64_t ld) {
  const int64_t r = a.r, d = a.d;
  for (int64_t g = g0; g < g1; ++g) {
    for (int64_t q = 0; q < w; ++q) {
      const int64_t i = g * w + q;
      T sum = T(0);
      const T* row = a.src + i * a.s0;
      T* rrow = rdst != nullptr ? rdst + i * ld : nullptr;
      for (int64_t k0 = 0; k0 < d; k0 += kc) {
        const int64_t len = std::min(kc, d - k0);
        T* blk = dst + k0 * groups * w + (g - base) * len * w + q;
        if (i < r) {
          for (int64_t k = 0; k < len; ++k) {
            const T val = round_operand<T>((row[(k0 + k) * a.s1] - a.center[k0 + k]) * a.scale, a.rounding);
            blk[k * w] = val;
            sum += val * val;
            if (rrow != nullptr) rrow[k0 + k] = val;
          }
        } else {
          for (int64_t k = 0; k < len; ++k) blk[k * w] = T(0);
          if (rrow != nullptr)
            for (int64_t k = 0; k < len; ++k) rrow[k0 + k] = T(0);
        }
      }
      if (rrow != nullptr)
        for (int64_t k = d; k < ld; ++k) rrow[k] = T(0);
      if (nrm != nullptr) nrm[(g - base) * w + q] = sum;
    }
  }
}

// All of a, scaled, packed (pack_groups) in parallel: the packed tensor, the squared norms when
// `norms` is given, the rows row-major when `rows` is given (groups*w x ld; the gradient's
// products): one pass over `a`, whatever its strides.
template <typename T>
void pack_scaled(const at::Tensor& a, const at::Tensor& center, double scale, int64_t w,
                 int64_t kc, int rounding, at::Tensor& packed, at::Tensor* norms,
                 at::Tensor* rows = nullptr, int64_t ld = 0) {
  const int64_t r = a.size(0), d = a.size(1);
  const int64_t groups = ceil_div(r, w);
  packed = at::empty({groups, d, w}, a.options());
  if (norms != nullptr) *norms = at::empty({groups * w}, a.options());
  if (rows != nullptr) *rows = at::empty({groups * w, ld}, a.options());
  const ScaledRows<T> src(a, center, scale, rounding);
  T* dst = packed.data_ptr<T>();
  T* nrm = norms != nullptr ? norms->data_ptr<T>() : nullptr;
  T* rdst = rows != nullptr ? rows->data_ptr<T>() : nullptr;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, d * w));
  at::parallel_for(0, groups, grain, [&](int64_t g0, int64_t g1) {
    pack_groups<T>(src, w, kc, g0, g1, 0, groups, dst, nrm, rdst, ld);
  });
}

// The mean over rows of a (r x d, any strides), non-finite entries counted as 0: the centre of
// the scaled coordinates. One pass in row order with float64 sums per thread (the torch
// expression where(isfinite(a), a, 0).mean(0) took about 10% of the forward at d = 784).
template <typename T>
at::Tensor finite_mean(const at::Tensor& a) {
  const int64_t r = a.size(0), d = a.size(1);
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), r / 256));
  std::vector<double> sums(static_cast<size_t>(parts * d), 0.0);
  const T* src = a.data_ptr<T>();
  const int64_t s0 = a.stride(0), s1 = a.stride(1);
  at::parallel_for(0, parts, 1, [&](int64_t b, int64_t e) {
    for (int64_t part = b; part < e; ++part) {
      double* acc = sums.data() + part * d;
      for (int64_t i = r * part / parts; i < r * (part + 1) / parts; ++i) {
        const T* row = src + i * s0;
        for (int64_t k = 0; k < d; ++k) {
          const double val = static_cast<double>(row[k * s1]);
          acc[k] += val - val == 0.0 ? val : 0.0;  // val - val is NaN for inf and NaN
        }
      }
    }
  });
  at::Tensor out = at::empty({d}, a.options());
  T* o = out.data_ptr<T>();
  for (int64_t k = 0; k < d; ++k) {
    double total = 0.0;
    for (int64_t part = 0; part < parts; ++part) total += sums[part * d + k];
    o[k] = static_cast<T>(total / static_cast<double>(r));
  }
  return out;
}

// V (m x c, any strides) transposed into c x m_pad, zero past m.
template <typename T>
at::Tensor transpose_padded(const at::Tensor& v, int64_t m_pad, int rounding) {
  const int64_t m = v.size(0), c = v.size(1);
  at::Tensor vt = at::empty({c, m_pad}, v.options());
  const T* src = v.data_ptr<T>();
  const int64_t s0 = v.stride(0), s1 = v.stride(1);
  T* dst = vt.data_ptr<T>();
  for (int64_t l = 0; l < c; ++l) {
    T* o = dst + l * m_pad;
    for (int64_t j = 0; j < m; ++j) o[j] = round_operand<T>(src[j * s0 + l * s1], rounding);
    for (int64_t j = m; j < m_pad; ++j) o[j] = T(0);
  }
  return vt;
}

// V (m x c, any strides) row-major into m_pad x cpad, zero past m and c.
template <typename T>
at::Tensor rows_padded(const at::Tensor& v, int64_t m_pad, int64_t cpad, int rounding) {
  const int64_t m = v.size(0), c = v.size(1);
  at::Tensor vr = at::zeros({m_pad, cpad}, v.options());
  const T* src = v.data_ptr<T>();
  const int64_t s0 = v.stride(0), s1 = v.stride(1);
  T* dst = vr.data_ptr<T>();
  for (int64_t j = 0; j < m; ++j)
    for (int64_t l = 0; l < c; ++l) dst[j * cpad + l] = round_operand<T>(src[j * s0 + l * s1], rounding);
  return vr;
}

at::Tensor pad_rows(const at::Tensor& a, int64_t rows) {
  at::Tensor out = at::zeros({rows, a.size(1)}, a.options());
  out.narrow(0, 0, a.size(0)).copy_(a);
  return out;
}

// Everything the tile kernels read, kept alive by the tensors in this struct.
struct Prepared {
  at::Tensor xs, zs;      // scaled rows, zero padded (n_pad x ld, m_pad x ld; gradient only)
  at::Tensor xp, zp;      // packed (xp undefined when the forward packs X per row block)
  at::Tensor xn, zn;      // padded squared norms (GEMM-trick mode)
  at::Tensor center;      // the centre of the scaled coordinates (d)
  at::Tensor vt;          // c x m_pad
  at::Tensor vrow;        // m_pad x cpad (wide V only)
  int64_t groups = 0, panels = 0, nr = 0, kc = 0, cpad = 0;
  bool direct = false, same = false;
};

// rows_ld > 0: also keep the scaled rows xs, zs (row-major, leading dimension rows_ld) for
// the gradient's products. nr, kc: the panel width and the features per chunk of the packed
// layouts (IsaTable). pack_x = false: X is left to the caller (pack_groups per row block).
template <typename T>
Prepared prepare(const at::Tensor& x, const at::Tensor& z, const at::Tensor& v, double scale,
                 int nr, int64_t kc, int64_t rows_ld, int rounding, bool round_v,
                 bool pack_x = true) {
  Prepared p;
  p.kc = kc;
  p.same = same_points(x, z);
  p.direct = x.size(1) <= kDirectMaxD;
  p.nr = nr;
  const int64_t n = x.size(0), m = z.size(0);
  p.groups = ceil_div(n, kMR);
  p.panels = ceil_div(m, nr);
  // Centring on the mean of z and scaling first keeps the GEMM trick's norms O(1). As in the
  // reference, non-finite entries count as 0 in the mean, so that they cannot spread to
  // the results of other rows (kernel_matrix keeps those exact).
  p.center = finite_mean<T>(z);
  at::Tensor* xn = p.direct ? nullptr : &p.xn;
  at::Tensor* zn = p.direct ? nullptr : &p.zn;
  const bool rows = rows_ld > 0;
  if (pack_x)
    pack_scaled<T>(x, p.center, scale, kMR, kc, rounding, p.xp, xn, rows ? &p.xs : nullptr, rows_ld);
  pack_scaled<T>(z, p.center, scale, nr, kc, rounding, p.zp, zn, rows ? &p.zs : nullptr, rows_ld);
  p.vt = transpose_padded<T>(v, p.panels * nr, round_v ? rounding : kIeee);
  return p;
}

// The wide-V layout (forward only): V row-major with c padded to the vector width.
template <typename T>
void prepare_wide_v(Prepared& p, const at::Tensor& v, int64_t width, int rounding) {
  p.cpad = ceil_div(v.size(1), width) * width;
  p.vrow = rows_padded<T>(v, p.panels * p.nr, p.cpad, rounding);
}

template <typename T>
TileArgs<T> tile_args(const Prepared& p, int kernel, int64_t n, int64_t m, int64_t d, int64_t c) {
  TileArgs<T> a;
  a.xp = p.xp.defined() ? p.xp.data_ptr<T>() : nullptr;
  a.zp = p.zp.data_ptr<T>();
  a.xn = p.direct || !p.xn.defined() ? nullptr : p.xn.data_ptr<T>();
  a.zn = p.direct ? nullptr : p.zn.data_ptr<T>();
  a.vt = p.vt.data_ptr<T>();
  a.vrow = p.vrow.defined() ? p.vrow.data_ptr<T>() : nullptr;
  a.cpad = p.cpad;
  a.n = n;
  a.m = m;
  a.d = d;
  a.c = c;
  a.m_pad = p.panels * p.nr;
  a.kc = p.kc;
  a.groups = p.groups;
  a.panels = p.panels;
  a.kernel = kernel;
  a.direct = p.direct;
  a.same = p.same;
  return a;
}

// Run task(worker_buffers, t) for t in [0, ntasks) on the intra-op threads, each worker
// pulling the next task from a shared counter.
template <typename Body>
void run_tasks(int64_t ntasks, const Body& body) {
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), ntasks));
  std::atomic<int64_t> next{0};
  at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) body(w, next);
  });
}

template <typename T>
void kmv_accumulate_impl(at::Tensor& out, const at::Tensor& x, const at::Tensor& z,
                         const at::Tensor& v, const KernelInfo& k, double alpha, int rounding) {
  // bf16 mode in float32 with AVX512-BF16 (GEMM-trick d only): bf16 products in hardware
  const Bf16Kernels* bf16 =
      sizeof(T) == 4 && rounding == kBf16 && x.size(1) > kDirectMaxD ? selected_bf16() : nullptr;
  const IsaTable* table = bf16 != nullptr ? bf16->table : selected_isa();
  const int nr = sizeof(T) == 4 ? table->nr_f32 : table->nr_f64;
  const int64_t n = x.size(0), m = z.size(0), d = x.size(1), c = v.size(1);
  // the bf16 kernels read the plain layout (one chunk), which pack_pairs converts
  const int64_t kc = bf16 != nullptr ? d : (sizeof(T) == 4 ? table->kc_f32 : table->kc_f64);
  const int64_t tile_panels = std::max<int64_t>(1, kTileBytes / static_cast<int64_t>(sizeof(T)) / nr);

  // Row blocks, and (when there are too few of them for an even share per thread) a split
  // of Z into parts whose partial products are summed afterwards. With dynamic scheduling a
  // thread waits at most about one task at the end: kTasksPerThread tasks per thread keep
  // that under ~3% (21 blocks of 192 rows on 2 threads lost 5% at n = 4000, d >= 256).
  const int64_t groups = ceil_div(n, kMR), panels = ceil_div(m, nr);
  const int64_t block_groups = d >= kLargeD ? kLargeDBlockGroups : kBlockGroups;
  const int64_t blocks = ceil_div(groups, block_groups);
  const int64_t threads = at::get_num_threads();
  const int64_t tiles = ceil_div(panels, tile_panels);
  int64_t splits = 1;
  if (threads > 1 && blocks < kTasksPerThread * threads)
    splits = std::max<int64_t>(1, std::min<int64_t>(ceil_div(kTasksPerThread * threads, blocks), tiles));

  // precision modes: the operands of both products (scaled x and z, K, V) are rounded.
  // Without a split of Z, X is packed one row block at a time inside the tasks (into a buffer
  // each worker reuses: no n x d allocation). With one, the parts of a block go to different
  // workers, which would each pack it: X is packed once up front instead, as it is for the
  // bf16 kernels, which read all of X in their pair layout.
  const bool block_x = bf16 == nullptr && splits == 1;
  Prepared p = prepare<T>(x, z, v, k.scale, nr, kc, 0, rounding, true, !block_x);
  const ScaledRows<T> x_rows(x, p.center, k.scale, rounding);
  const bool wide = c >= kWideC;
  if (wide) prepare_wide_v<T>(p, v, sizeof(T) == 4 ? table->width_f32 : table->width_f32 / 2, rounding);
  const int64_t ldacc = wide ? p.cpad : c;  // columns of the accumulators kmv_rows writes
  TileArgs<T> a = tile_args<T>(p, k.id, n, m, d, c);
  a.rounding = rounding;
  a.tile_panels = tile_panels;
  auto rows_fn = sizeof(T) == 4 ? reinterpret_cast<void*>(table->kmv_rows_f32)
                                : reinterpret_cast<void*>(table->kmv_rows_f64);
  auto isa_rows = reinterpret_cast<void (*)(const TileArgs<T>&, int64_t, int64_t, int64_t,
                                            int64_t, T*, T*)>(rows_fn);
  at::Tensor xb, zb;
  if (bf16 != nullptr) xb = pack_pairs(p.xp), zb = pack_pairs(p.zp);
  auto kmv_rows = [&](const TileArgs<T>& args, int64_t g0, int64_t g1, int64_t p0, int64_t p1,
                      T* acc, T* work) {
    if (bf16 == nullptr) return isa_rows(args, g0, g1, p0, p1, acc, work);
    bf16->kmv_rows(reinterpret_cast<const TileArgs<float>&>(args),
                   reinterpret_cast<const uint32_t*>(xb.data_ptr<int32_t>()),
                   reinterpret_cast<const uint32_t*>(zb.data_ptr<int32_t>()), g0, g1, p0, p1,
                   reinterpret_cast<float*>(acc), reinterpret_cast<float*>(work));
  };

  at::Tensor partial;
  if (splits > 1) partial = at::zeros({splits, n, c}, out.options());
  T* out_ptr = out.data_ptr<T>();
  T* partial_ptr = splits > 1 ? partial.data_ptr<T>() : nullptr;
  const T alpha_t = static_cast<T>(alpha);
  const int64_t ntasks = blocks * splits;

  run_tasks(ntasks, [&](int64_t, std::atomic<int64_t>& next) {
    std::vector<T> work(static_cast<size_t>(block_groups * kMR * a.tile_panels * nr));
    std::vector<T> acc(static_cast<size_t>(block_groups * kMR * ldacc));
    std::vector<T> xblock(block_x ? static_cast<size_t>(block_groups * kMR * d) : 0);
    std::vector<T> xnorms(block_x ? static_cast<size_t>(block_groups * kMR) : 0);
    TileArgs<T> args = a;
    for (int64_t t = next++; t < ntasks; t = next++) {
      const int64_t b = t / splits, s = t % splits;
      const int64_t g0 = b * block_groups, g1 = std::min(g0 + block_groups, p.groups);
      // Z part s in whole tiles
      const int64_t p0 = std::min(p.panels, (tiles * s / splits) * a.tile_panels);
      const int64_t p1 = std::min(p.panels, (tiles * (s + 1) / splits) * a.tile_panels);
      if (p0 >= p1) continue;
      if (block_x) {
        pack_groups<T>(x_rows, kMR, kc, g0, g1, g0, g1 - g0, xblock.data(),
                       p.direct ? nullptr : xnorms.data(), nullptr, 0);
        args.xp = xblock.data();
        args.xn = p.direct ? nullptr : xnorms.data();
        args.groups = g1 - g0;
        args.xg0 = g0;
      }
      std::fill(acc.begin(), acc.end(), T(0));
      kmv_rows(args, g0, g1, p0, p1, acc.data(), work.data());
      const int64_t r0 = g0 * kMR, rows = std::min(g1 * kMR, n) - r0;
      T* o = splits == 1 ? out_ptr + r0 * c : partial_ptr + (s * n + r0) * c;
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t l = 0; l < c; ++l) {
          const T val = acc[i * ldacc + l];
          if (splits == 1)
            o[i * c + l] += alpha_t * val;
          else
            o[i * c + l] = val;
        }
    }
  });
  if (splits > 1) out.add_(partial.sum(0), alpha);
}

void cpu_kmv_accumulate(at::Tensor out, const at::Tensor& x, const at::Tensor& z,
                        const at::Tensor& v, int64_t kernel, double scale,
                        double alpha, c10::string_view precision) {
  check_inputs(x, z, v);
  const KernelInfo k = kernel_info(kernel, scale);
  const int rounding = rounding_of(std::string(precision));
  TORCH_CHECK(out.device().is_cpu() && out.scalar_type() == x.scalar_type() && out.is_contiguous(),
              "kops native CPU kernel: out must be a contiguous CPU tensor of x's dtype (",
              x.scalar_type(), "), got ", out.scalar_type(), out.is_contiguous() ? "" : " non-contiguous");
  TORCH_CHECK(out.dim() == 2 && out.size(0) == x.size(0) && out.size(1) == v.size(1),
              "kops native CPU kernel: out must have shape (n, c) = (", x.size(0), ", ", v.size(1),
              "), got ", out.sizes());
  if (x.size(0) == 0 || z.size(0) == 0 || v.size(1) == 0 || alpha == 0.0) return;
  at::NoGradGuard no_grad;
  if (x.scalar_type() == at::kFloat)
    kmv_accumulate_impl<float>(out, x, z, v, k, alpha, rounding);
  else
    kmv_accumulate_impl<double>(out, x, z, v, k, alpha, rounding);
}

// The gradient's last pass: out (r x d) = factor * (sum_p part_p + sum_p sums_p (x) s), with
// `nparts` parts `pstride` apart, each row-major (element (i, k) at i * ld + k) or transposed
// (at k * ld + i: the small-d path), `nsums` vectors of sums `sstride` apart, and s the scaled
// rows (leading dimension lds). One pass instead of torch's sum, addcmul, mul and copy.
template <typename T>
at::Tensor finish_gradient(const T* parts, int64_t nparts, int64_t pstride, int64_t ld,
                           bool transposed, const T* sums, int64_t nsums, int64_t sstride,
                           const T* s, int64_t lds, int64_t r, int64_t d, double factor,
                           const at::TensorOptions& opts) {
  at::Tensor out = at::empty({r, d}, opts);
  T* o = out.data_ptr<T>();
  const T f = static_cast<T>(factor);
  const int64_t ks = transposed ? ld : 1, is = transposed ? 1 : ld;
  at::parallel_for(0, r, std::max<int64_t>(1, 16384 / d), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      T sum = T(0);
      for (int64_t q = 0; q < nsums; ++q) sum += sums[q * sstride + i];
      for (int64_t k = 0; k < d; ++k) {
        T acc = T(0);
        for (int64_t q = 0; q < nparts; ++q) acc += parts[q * pstride + i * is + k * ks];
        o[i * d + k] = (acc + sum * s[i * lds + k]) * f;
      }
    }
  });
  return out;
}

// Gradients of <grad_out, K(x, z) v>: with q_ij = f'(u_ij) <g_i, v_j>,
//   gx = 2 scale (rowsum(q) xs - q zs),  gz = 2 scale (colsum(q) zs - q^T xs).
// q is formed one block x tile at a time by the tile kernels, and the two products with it
// by the ISA's product microkernel on the same tile (grad_products), on row-major copies of
// xs and zs with d padded to the vector width (written by the packing pass); for small d by
// one pass over q with zs and gz transposed (grad_products_small). gx rows belong to one task
// (unless Z is split for lack of row blocks: then gx is summed per worker too); gz is summed
// per worker.
template <typename T>
std::tuple<at::Tensor, at::Tensor> kmv_grad_impl(const at::Tensor& x, const at::Tensor& z,
                                                 const at::Tensor& v, const at::Tensor& grad_out,
                                                 const KernelInfo& k, int rounding) {
  const IsaTable* table = selected_isa();
  const int nr = sizeof(T) == 4 ? table->nr_f32 : table->nr_f64;
  const int64_t width = sizeof(T) == 4 ? table->width_f32 : table->width_f32 / 2;
  const int64_t size = static_cast<int64_t>(sizeof(T));
  const int64_t n = x.size(0), m = z.size(0), d = x.size(1), c = v.size(1);
  const int64_t dp = ceil_div(d, width) * width;
  const int64_t ld = padded_ld(dp, size);  // of xs, zs, gx and gz
  // precision modes: as the reference, only the scaled x and z are rounded here
  const Prepared p = prepare<T>(x, z, v, k.scale, nr, sizeof(T) == 4 ? table->kc_f32 : table->kc_f64,
                                ld, rounding, false);
  const at::Tensor g = pad_rows(grad_out, p.groups * kMR);
  const int64_t n_pad = p.groups * kMR, m_pad = p.panels * nr;
  const auto opts = x.options();
  TileArgs<T> a = tile_args<T>(p, k.id, n, m, d, c);
  a.g = g.data_ptr<T>();
  a.noise_floor = !k.smooth_at_zero;
  const int64_t tile_panels = std::max<int64_t>(1, kGradTileCols / nr);
  a.tile_panels = tile_panels;
  auto tile_fn = sizeof(T) == 4 ? reinterpret_cast<void*>(table->grad_tile_f32)
                                : reinterpret_cast<void*>(table->grad_tile_f64);
  auto grad_tile = reinterpret_cast<void (*)(const TileArgs<T>&, int64_t, int64_t, int64_t,
                                             int64_t, T*, int64_t, T*, T*)>(tile_fn);
  auto prod_fn = sizeof(T) == 4 ? reinterpret_cast<void*>(table->grad_products_f32)
                                : reinterpret_cast<void*>(table->grad_products_f64);
  auto grad_products = reinterpret_cast<void (*)(const T*, int64_t, int64_t, int64_t, const T*,
                                                 const T*, int64_t, int64_t, T*, T*)>(prod_fn);
  auto small_fn = sizeof(T) == 4 ? reinterpret_cast<void*>(table->grad_products_small_f32)
                                 : reinterpret_cast<void*>(table->grad_products_small_f64);
  auto grad_products_small =
      reinterpret_cast<void (*)(const T*, int64_t, int64_t, int64_t, const T*, int64_t, const T*,
                                int64_t, int64_t, T*, T*, int64_t)>(small_fn);
  // small d: zs and gz transposed (D x ldz, zero rows past d), see grad_products_small
  const int64_t small_d = small_grad_width(d);
  TORCH_CHECK(small_d <= dp, "kops native CPU kernel: internal error, small gradient width ", small_d,
              " exceeds the padded d ", dp);
  const int64_t ldz = padded_ld(m_pad, size);
  at::Tensor zst;
  if (small_d > 0) {
    zst = at::zeros({small_d, ldz}, opts);
    zst.narrow(0, 0, d).narrow(1, 0, m_pad).copy_(p.zs.narrow(1, 0, d).t());
  }

  const int64_t blocks = ceil_div(p.groups, kGradBlockGroups);
  // Too few row blocks for an even share per thread (with dynamic scheduling a thread waits
  // about one task at the end): split Z as well, with per-worker gx sums.
  const int64_t threads = at::get_num_threads();
  const int64_t tiles = ceil_div(p.panels, tile_panels);
  int64_t splits = 1;
  if (threads > 1 && blocks < kGradTasksPerThread * threads)
    splits = std::max<int64_t>(1, std::min<int64_t>(ceil_div(kGradTasksPerThread * threads, blocks), tiles));
  const int64_t ntasks = blocks * splits;
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(threads, ntasks));
  // per-worker sums: gz (m_pad x ld), colsum(q) (m_pad), gx (n_pad x ld) when Z is split
  at::Tensor gz_parts = small_d > 0 ? at::zeros({workers, small_d, ldz}, opts)
                                    : at::zeros({workers, m_pad, ld}, opts);
  at::Tensor cs_parts = at::zeros({workers, m_pad}, opts);
  const int64_t gx_count = splits > 1 ? workers : 1;
  at::Tensor gx_parts = at::zeros({gx_count, n_pad, ld}, opts);
  at::Tensor rs_all = at::zeros({gx_count, n_pad}, opts);
  const int64_t ldq = padded_ld(tile_panels * nr, size);
  const T* xs_ptr = p.xs.data_ptr<T>();
  const T* zs_ptr = p.zs.data_ptr<T>();

  run_tasks(ntasks, [&](int64_t w, std::atomic<int64_t>& next) {
    at::Tensor q = at::empty({kGradBlockGroups * kMR, ldq}, opts);
    const int64_t part = splits > 1 ? w : 0;
    T* gx_w = gx_parts[part].data_ptr<T>();
    T* gz_w = gz_parts[w].data_ptr<T>();
    T* cs_w = cs_parts[w].data_ptr<T>();
    T* rs_w = rs_all[part].data_ptr<T>();
    for (int64_t t = next++; t < ntasks; t = next++) {
      const int64_t b = t / splits, s = t % splits;
      const int64_t g0 = b * kGradBlockGroups, g1 = std::min(g0 + kGradBlockGroups, p.groups);
      const int64_t r0 = g0 * kMR, rows = std::min(g1 * kMR, n) - r0;
      const int64_t p_lo = std::min(p.panels, (tiles * s / splits) * tile_panels);
      const int64_t p_hi = std::min(p.panels, (tiles * (s + 1) / splits) * tile_panels);
      if (p_lo >= p_hi) continue;
      for (int64_t t0 = p_lo; t0 < p_hi; t0 += tile_panels) {
        const int64_t t1 = std::min(t0 + tile_panels, p_hi);
        const int64_t j0 = t0 * nr, cols = (t1 - t0) * nr;
        grad_tile(a, g0, g1, t0, t1, q.data_ptr<T>(), ldq, rs_w + r0, cs_w + j0);
        if (small_d > 0)
          grad_products_small(q.data_ptr<T>(), ldq, rows, cols, xs_ptr + r0 * ld, ld,
                              zst.data_ptr<T>() + j0, ldz, small_d, gx_w + r0 * ld, gz_w + j0, ldz);
        else
          grad_products(q.data_ptr<T>(), ldq, rows, cols, xs_ptr + r0 * ld, zs_ptr + j0 * ld, dp, ld,
                        gx_w + r0 * ld, gz_w + j0 * ld);
      }
    }
  });
  const double factor = 2.0 * k.scale;
  at::Tensor gx = finish_gradient<T>(gx_parts.data_ptr<T>(), gx_count, n_pad * ld, ld, false,
                                     rs_all.data_ptr<T>(), gx_count, n_pad, xs_ptr, ld, n, d, factor, opts);
  at::Tensor gz = small_d > 0
      ? finish_gradient<T>(gz_parts.data_ptr<T>(), workers, small_d * ldz, ldz, true,
                           cs_parts.data_ptr<T>(), workers, m_pad, zs_ptr, ld, m, d, factor, opts)
      : finish_gradient<T>(gz_parts.data_ptr<T>(), workers, m_pad * ld, ld, false,
                           cs_parts.data_ptr<T>(), workers, m_pad, zs_ptr, ld, m, d, factor, opts);
  return {gx, gz};
}

std::tuple<at::Tensor, at::Tensor> cpu_kmv_grad_xz(const at::Tensor& x, const at::Tensor& z,
                                                   const at::Tensor& v, const at::Tensor& grad_out,
                                                   int64_t kernel, double scale,
                                                   c10::string_view precision) {
  check_inputs(x, z, v);
  const KernelInfo k = kernel_info(kernel, scale);
  const int rounding = rounding_of(std::string(precision));
  TORCH_CHECK(grad_out.device().is_cpu() && grad_out.scalar_type() == x.scalar_type(),
              "kops native CPU kernel: grad_out must be a CPU tensor of x's dtype");
  TORCH_CHECK(grad_out.dim() == 2 && grad_out.size(0) == x.size(0) && grad_out.size(1) == v.size(1),
              "kops native CPU kernel: grad_out must have shape (n, c) = (", x.size(0), ", ",
              v.size(1), "), got ", grad_out.sizes());
  if (x.size(0) == 0 || z.size(0) == 0 || v.size(1) == 0)
    return {at::zeros(x.sizes(), x.options()), at::zeros(z.sizes(), z.options())};
  at::NoGradGuard no_grad;
  if (x.scalar_type() == at::kFloat) return kmv_grad_impl<float>(x, z, v, grad_out, k, rounding);
  return kmv_grad_impl<double>(x, z, v, grad_out, k, rounding);
}

// K(x, z) (n x m, dtype of x): tiles of the kmv kernel written out. The precision modes
// round the scaled x and z (not K), as the reference does.
template <typename T>
at::Tensor kernel_matrix_impl(const at::Tensor& x, const at::Tensor& z, const KernelInfo& k,
                              int rounding) {
  const IsaTable* table = selected_isa();
  const int nr = sizeof(T) == 4 ? table->nr_f32 : table->nr_f64;
  const int64_t n = x.size(0), m = z.size(0), d = x.size(1);
  const at::Tensor no_v = at::zeros({m, 1}, x.options());
  const Prepared p = prepare<T>(x, z, no_v, k.scale, nr,
                                sizeof(T) == 4 ? table->kc_f32 : table->kc_f64, 0, rounding, false);
  TileArgs<T> a = tile_args<T>(p, k.id, n, m, d, 1);
  a.tile_panels = std::max<int64_t>(1, kTileBytes / static_cast<int64_t>(sizeof(T)) / nr);
  auto fn = sizeof(T) == 4 ? reinterpret_cast<void*>(table->kernel_tile_f32)
                           : reinterpret_cast<void*>(table->kernel_tile_f64);
  auto kernel_tile = reinterpret_cast<void (*)(const TileArgs<T>&, int64_t, int64_t, int64_t,
                                               int64_t, T*, int64_t)>(fn);
  at::Tensor out = at::empty({n, m}, x.options());
  T* o = out.data_ptr<T>();
  const int64_t blocks = ceil_div(p.groups, kBlockGroups);
  const int64_t tiles = ceil_div(p.panels, a.tile_panels);
  const int64_t ntasks = blocks * tiles;
  const int64_t ldw = a.tile_panels * nr;
  run_tasks(ntasks, [&](int64_t, std::atomic<int64_t>& next) {
    std::vector<T> work(static_cast<size_t>(kBlockGroups * kMR * ldw));
    for (int64_t t = next++; t < ntasks; t = next++) {
      const int64_t b = t / tiles, s = t % tiles;
      const int64_t g0 = b * kBlockGroups, g1 = std::min(g0 + kBlockGroups, p.groups);
      const int64_t p0 = s * a.tile_panels, p1 = std::min(p0 + a.tile_panels, p.panels);
      kernel_tile(a, g0, g1, p0, p1, work.data(), ldw);
      const int64_t r0 = g0 * kMR, rows = std::min(g1 * kMR, n) - r0;
      const int64_t c0 = p0 * nr, cols = std::min(p1 * nr, m) - c0;
      for (int64_t i = 0; i < rows; ++i)
        std::memcpy(o + (r0 + i) * m + c0, work.data() + i * ldw, static_cast<size_t>(cols) * sizeof(T));
    }
  });
  return out;
}

at::Tensor cpu_kernel_matrix(const at::Tensor& x, const at::Tensor& z, int64_t kernel,
                             double scale, c10::string_view precision) {
  TORCH_CHECK(x.dim() == 2 && z.dim() == 2 && z.size(1) >= 1,
              "kops native CPU kernel: x (n, d) and z (m, d) must be 2-D with d >= 1, got ",
              x.sizes(), " and ", z.sizes());
  check_inputs(x, z, z.narrow(1, 0, 1));
  const KernelInfo k = kernel_info(kernel, scale);
  const int rounding = rounding_of(std::string(precision));
  if (x.size(0) == 0 || z.size(0) == 0) return at::zeros({x.size(0), z.size(0)}, x.options());
  at::NoGradGuard no_grad;
  if (x.scalar_type() == at::kFloat) return kernel_matrix_impl<float>(x, z, k, rounding);
  return kernel_matrix_impl<double>(x, z, k, rounding);
}

std::string cpu_isa() { return selected_isa()->name; }

}  // namespace
}  // namespace kops_cpu

// Private ops of the native CPU backend (not part of the public kops schemas in ops.cpp).
TORCH_LIBRARY_FRAGMENT(kops, m) {
  // out (n, c, contiguous, dtype of x) += alpha * K(x, z) @ v; float32 / float64, CPU;
  // precision "ieee", or "tf32" / "bf16" emulated by rounding the operands.
  // kernel: the code of csrc/kernel_codes.h; scale: the kernel's input scale (kops/kernels.py).
  m.def("_cpu_kmv_accumulate(Tensor(a!) out, Tensor x, Tensor z, Tensor v, int kernel, "
        "float scale, float alpha, str precision=\"ieee\") -> ()");
  // (grad_x, grad_z) of <grad_out, K(x, z) @ v>, dtype of x.
  m.def("_cpu_kmv_grad_xz(Tensor x, Tensor z, Tensor v, Tensor grad_out, int kernel, "
        "float scale, str precision=\"ieee\") -> (Tensor, Tensor)");
  // K(x, z), (n, m), dtype of x.
  m.def("_cpu_kernel_matrix(Tensor x, Tensor z, int kernel, float scale, "
        "str precision=\"ieee\") -> Tensor");
  // name of the instruction set the native CPU kernels use ("avx512", "avx2" or "portable")
  m.def("_cpu_isa() -> str", &kops_cpu::cpu_isa);

}

TORCH_LIBRARY_IMPL(kops, CPU, m) {
  m.impl("_cpu_kmv_accumulate", &kops_cpu::cpu_kmv_accumulate);
  m.impl("_cpu_kmv_grad_xz", &kops_cpu::cpu_kmv_grad_xz);
  m.impl("_cpu_kernel_matrix", &kops_cpu::cpu_kernel_matrix);
}
