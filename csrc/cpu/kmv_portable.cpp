// Portable variant of the tile kernels (baseline ISA of the build; the compiler vectorises
// the small fixed-width loops of kmv_simd.h). Used where AVX2/FMA is absent or disabled.
#include "kmv_kernels.h"

#define KOPS_CPU_ISA portable
#include "kmv_impl.h"

namespace kops_cpu {
const IsaTable* portable_table() { return portable::make_table("portable"); }
}  // namespace kops_cpu
