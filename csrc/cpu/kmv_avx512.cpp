// AVX-512 variant of the tile kernels (float x 16, double x 8). CMake compiles this file alone
// with -mavx512f -mavx512dq -mavx512bw -mavx512vl -mavx2 -mfma (x86-64 only); the binding calls
// it only after checking at run time that the CPU has all of them, so the package still runs
// on CPUs without AVX-512 (through kmv_avx2.cpp or kmv_portable.cpp).
#include "kmv_kernels.h"

#if defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512BW__) && \
    defined(__AVX512VL__) && defined(__FMA__)
#define KOPS_CPU_AVX512 1
#define KOPS_CPU_ISA avx512
#include "kmv_impl.h"

namespace kops_cpu {
const IsaTable* avx512_table() { return avx512::make_table("avx512"); }
}  // namespace kops_cpu
#else
namespace kops_cpu {
const IsaTable* avx512_table() { return nullptr; }
}  // namespace kops_cpu
#endif
