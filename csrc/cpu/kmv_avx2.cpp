// AVX2 + FMA variant of the tile kernels. CMake compiles this file alone with -mavx2 -mfma
// (x86-64 only); the binding calls it only after checking at run time that the CPU has
// both, so the package still runs on CPUs without them (through kmv_portable.cpp).
#include "kmv_kernels.h"

#if defined(__AVX2__) && defined(__FMA__)
#define KOPS_CPU_AVX2 1
#define KOPS_CPU_ISA avx2
#include "kmv_impl.h"

namespace kops_cpu {
const IsaTable* avx2_table() { return avx2::make_table("avx2"); }
}  // namespace kops_cpu
#else
namespace kops_cpu {
const IsaTable* avx2_table() { return nullptr; }
}  // namespace kops_cpu
#endif
