// The device buffers the activation kernel (act_quant.cu) writes for one layer call: its outputs,
// read by the GEMM (codes, scales, low-rank activations, fp8 row scales), and its scratch (the
// per-chunk low-rank partial sums, the ticket counters, the fp8 row amax). Sized here, in one
// place, for up to a given number of rows; used by Sm90Layer, the kernel tests and cuda_bench.
#pragma once
#include <cstdint>
#include <vector>

#include "device_buffer.hpp"
#include "sm90_kernels.hpp"

namespace svdquant::cuda {

class ActWorkspace {
 public:
  ActWorkspace() = default;
  ActWorkspace(int64_t rows, int64_t K, int Rpad, bool fp8) { allocate(rows, K, Rpad, fp8); }

  // (Re)allocates for calls with up to `rows` rows (contents discarded, tickets zeroed; the
  // fp8 row buffers only with fp8). Synchronous.
  void allocate(int64_t rows, int64_t K, int Rpad, bool fp8);
  // Sets p's output and scratch pointers (codes, ascale, lact, lpart, tickets, row_amax,
  // row_scale); the caller sets the inputs, the shape and the flags.
  void fill(ActQuantParams& p) const;
  // Moves every allocated buffer out (to keep them alive for captured CUDA graphs), leaving the
  // workspace empty.
  std::vector<DeviceBuffer> release();

  int64_t rows() const { return Mpad_; }  // padded rows the buffers hold (0: none)

  DeviceBuffer codes, ascale, lact, lpart, tickets, row_amax, row_scale;

 private:
  int64_t Mpad_ = 0;
};

}  // namespace svdquant::cuda
