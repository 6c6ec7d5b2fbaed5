// Which tile kernels run (the instruction-set selection of kmv_kernels.h: AVX-512, AVX2 or
// portable, and the AVX512-BF16 kernels of the bf16 mode), checked against the CPU at run
// time, and the probes that expose them to tests and the benchmark: private ops
// kops::_cpu_bf16_path, kops::_cpu_exp_neg (the kernels' vector exp) and kops::_cpu_fma_rate
// (the FMA pipes' peak, the roofline's matrix rate).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kmv_kernels.h"

namespace kops_cpu {
namespace {

bool cpu_has_avx2_fma() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

// every extension kmv_avx512.cpp is compiled with
bool cpu_has_avx512() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

}  // namespace

// The ISA in use: the widest one compiled in and supported by this CPU (AVX-512, then AVX2),
// unless the environment variable KOPS_CPU_ISA asks for a narrower one ("avx2" or
// "portable"; tests use it). A request the CPU cannot run falls back to the best it can.
const IsaTable* selected_isa() {
  static const IsaTable* avx2 = (avx2_table() != nullptr && cpu_has_avx2_fma()) ? avx2_table() : nullptr;
  static const IsaTable* avx512 = (avx512_table() != nullptr && cpu_has_avx512()) ? avx512_table() : nullptr;
  const IsaTable* best = avx512 ? avx512 : (avx2 ? avx2 : portable_table());
  const char* env = std::getenv("KOPS_CPU_ISA");
  if (env == nullptr) return best;
  if (std::strcmp(env, "portable") == 0) return portable_table();
  if (std::strcmp(env, "avx2") == 0 && avx2 != nullptr) return avx2;
  return best;
}

// The AVX512-BF16 forward kernels of the bf16 mode, when the build has them, the CPU runs
// them, the ISA in use is AVX-512 and KOPS_CPU_BF16 is not "emulate" (tests compare both).
const Bf16Kernels* selected_bf16() {
  static const Bf16Kernels* kernels = [] {
    const Bf16Kernels* k = avx512bf16_kernels();
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (k != nullptr && cpu_has_avx512() && __builtin_cpu_supports("avx512bf16")) return k;
#endif
    return static_cast<const Bf16Kernels*>(nullptr);
  }();
  const char* env = std::getenv("KOPS_CPU_BF16");
  if (kernels == nullptr || (env != nullptr && std::strcmp(env, "emulate") == 0)) return nullptr;
  return std::strcmp(selected_isa()->name, "avx512") == 0 ? kernels : nullptr;
}

namespace {

// what runs the bf16 mode's forward products: "avx512_bf16" (hardware) or "emulated"
std::string cpu_bf16_path() { return selected_bf16() != nullptr ? "avx512_bf16" : "emulated"; }

// FLOP/s of the selected ISA's FMA pipes on all intra-op threads (12 chains of `reps` FMAs
// per thread, timed from the first start to the last end).
double cpu_fma_rate(bool f64, int64_t reps) {
  const IsaTable* table = selected_isa();
  const int64_t threads = at::get_num_threads();
  std::atomic<int64_t> sink{0};
  const auto t0 = std::chrono::steady_clock::now();
  at::parallel_for(0, threads, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const double r = f64 ? table->fma_chains_f64(reps) : table->fma_chains_f32(reps);
      sink += r > 0.0 ? 1 : 0;
    }
  });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double lanes = f64 ? table->width_f32 / 2 : table->width_f32;
  return sink.load() >= 0 ? 2.0 * 12.0 * lanes * static_cast<double>(reps * threads) / seconds : 0.0;
}

// exp(-x) elementwise by the selected ISA's vector exp (x >= 0 or NaN): its accuracy test and
// the benchmark's exp rate.
at::Tensor cpu_exp_neg(const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble),
              "kops native CPU kernel: exp_neg takes a float32 or float64 CPU tensor");
  const at::Tensor in = x.contiguous();
  at::Tensor out = at::empty_like(in);
  const IsaTable* table = selected_isa();
  const int64_t len = in.numel();
  at::parallel_for(0, len, 32768, [&](int64_t b, int64_t e) {
    if (in.scalar_type() == at::kFloat)
      table->exp_neg_f32(in.data_ptr<float>() + b, out.data_ptr<float>() + b, e - b);
    else
      table->exp_neg_f64(in.data_ptr<double>() + b, out.data_ptr<double>() + b, e - b);
  });
  return out;
}

}  // namespace
}  // namespace kops_cpu

TORCH_LIBRARY_FRAGMENT(kops, m) {
  // what runs the bf16 mode's forward distance products: "avx512_bf16" or "emulated"
  m.def("_cpu_bf16_path() -> str", &kops_cpu::cpu_bf16_path);
  // exp(-x) by the kernels' vector exp (float32 / float64, x >= 0)
  m.def("_cpu_exp_neg(Tensor x) -> Tensor");
  // FLOP/s of the FMA pipes of the ISA in use, all intra-op threads (the benchmark's floor)
  m.def("_cpu_fma_rate(bool f64, int reps) -> float", &kops_cpu::cpu_fma_rate);
}

TORCH_LIBRARY_IMPL(kops, CPU, m) { m.impl("_cpu_exp_neg", &kops_cpu::cpu_exp_neg); }
