// What the Hopper probes of bench/cuda (tma_probe, nibble_probe, wgmma_probe) share: the CUDA
// error check and the device check, each exiting with a message that names the program.
#pragma once

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

namespace svdquant::probe {

inline const char* g_program = "probe";  // set by require_hopper

// Exits with status 1 and the failing call's name where a CUDA call failed.
inline void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s: %s\n", g_program, what, cudaGetErrorString(e));
    std::exit(1);
  }
}

// Device 0's properties; exits with status 1 unless it is a Hopper GPU (compute capability 9.x).
inline cudaDeviceProp require_hopper(const char* program) {
  g_program = program;
  cudaDeviceProp prop{};
  ck(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  if (prop.major != 9) {
    std::fprintf(stderr, "%s: needs a Hopper GPU (found %s)\n", program, prop.name);
    std::exit(1);
  }
  return prop;
}

}  // namespace svdquant::probe
