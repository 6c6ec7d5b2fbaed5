// How a launch of the CUDA kernel products splits the z range (host code, no CUDA calls; kept
// apart from kmv_dispatch.cuh so that the CPU emulation test can check it with a host compiler).
#pragma once

#include <cstdint>

namespace kops {
namespace cuda {
namespace detail {

// How a launch covers the problem: row blocks x column chunks x splits of the z range.
struct Plan {
  int64_t splits = 1;
  int64_t per_split = 0;  // z points per split (whole tiles)
  int64_t workspace = 0;  // bytes of partial sums when split
};

// Splits of the z range when the row blocks and column chunks (`other` blocks) fill less than
// one wave of resident blocks: the split count (at most one tile each, at most four waves,
// workspace at most kMaxWorkspace) that best fills whole waves, the fewest among near-ties.
constexpr int64_t kMaxWorkspace = int64_t(256) << 20;
inline Plan plan_splits(int64_t other, int64_t m, int tile, int sms, int per_sm,
                        int64_t out_elems, int elem_size, int64_t workspace_available) {
  Plan plan;
  const int64_t slots = int64_t(sms) * per_sm;
  const int64_t tiles = (m + tile - 1) / tile;
  const int64_t split_bytes = out_elems * elem_size;
  const int64_t four_waves = 4 * ((slots + other - 1) / other);
  int64_t max_splits = tiles;
  if (max_splits > four_waves) max_splits = four_waves;
  if (max_splits > kMaxWorkspace / split_bytes) max_splits = kMaxWorkspace / split_bytes;
  if (max_splits > 65535) max_splits = 65535;
  if (other < slots && max_splits > 1) {
    double best = double(other) / double(slots);
    for (int64_t s = 2; s <= max_splits; ++s) {
      const int64_t blocks = other * s;
      const double fill = double(blocks) / double((blocks + slots - 1) / slots * slots);
      if (fill > best + 0.02) {
        best = fill;
        plan.splits = s;
      }
    }
  }
  const int64_t tiles_per_split = (tiles + plan.splits - 1) / plan.splits;
  plan.per_split = tiles_per_split * tile;
  plan.splits = (m + plan.per_split - 1) / plan.per_split;
  plan.workspace = plan.splits > 1 ? plan.splits * split_bytes : 0;
  if (workspace_available >= 0 && plan.workspace > workspace_available) {  // not given: unsplit
    plan = Plan();
    plan.per_split = m;
  }
  return plan;
}

}  // namespace detail
}  // namespace cuda
}  // namespace kops
