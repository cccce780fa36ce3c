// CUDA runtime errors -> svdquant exceptions naming the failed call.
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "svdquant/error.hpp"

namespace svdquant::cuda {

// Throws svdquant::Error "cuda-sm90: <what>: <cudaGetErrorName>: <cudaGetErrorString>".
[[noreturn]] void throw_cuda_error(cudaError_t e, const char* what);

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw_cuda_error(e, what);
}

// After a kernel launch: reports a launch-configuration error (asynchronous faults surface at the
// next synchronizing call, which is checked too).
inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

// The multiprocessor count of `device` (-1: the current device).
int sm_count(int device = -1);

}  // namespace svdquant::cuda
