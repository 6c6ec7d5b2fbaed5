// Host emulation of the CUDA device builtins used by csrc/cuda/kmv_kernels.cuh: every CUDA
// thread of a block is a std::thread, __syncthreads is a std::barrier, __shared__ variables
// are function statics (blocks run one after another), atomics take a mutex.
#pragma once
#include <barrier>
#include <cmath>
#include <mutex>

#include "cuda_runtime_api.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 gridDim, blockDim;
inline std::barrier<>* emu_barrier = nullptr;
inline std::mutex emu_atomic_mutex;

inline void __syncthreads() { emu_barrier->arrive_and_wait(); }
inline float rsqrtf(float a) { return 1.0f / std::sqrt(a); }
inline double rsqrt(double a) { return 1.0 / std::sqrt(a); }
template <typename T>
inline T atomicAdd(T* p, T v) {
  std::lock_guard<std::mutex> lock(emu_atomic_mutex);
  const T old = *p;
  *p = old + v;
  return old;
}
