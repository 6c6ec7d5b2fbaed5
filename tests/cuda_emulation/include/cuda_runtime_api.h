// Host emulation of the few CUDA runtime declarations that csrc/cuda/kmv_launch.h needs, so
// that the torch-free kernels can be compiled by a host C++ compiler and run on the CPU
// (tests/cuda_emulation/emulate.cpp). Not a CUDA implementation: only what the kernels use.
#pragma once
typedef int cudaError_t;
typedef struct CUstream_st* cudaStream_t;
#define cudaSuccess 0
#define cudaErrorInvalidValue 1
