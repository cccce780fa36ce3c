// The int4 weights expanded to e4m3 once per call, for the GEMM's shared-memory A operand (SS
// wgmma): the consumers then neither load nor expand weight fragments, and the expansion is done
// once per weight tile instead of once per (weight tile, activation row tile) pair.
//
// In: wfrag[nt][g][wg][tid][16 bytes] (sm90_layout.hpp, the register-fragment order). Out:
// wexp[nt][g][8192], each (nt, g) tile 128 weight rows x 64 k of e4m3 bytes in the activation code
// tiles' layout (code_tile_offset: K-major rows of 64 bytes, 64-byte swizzle), so that one
// descriptor form serves both operands. One thread per 16-byte fragment (weight_expand.cuh). When
// the activation kernel has room, its extra blocks do this work instead (act_quant.cu, v12).
#include "cuda_check.hpp"
#include "pdl.hpp"
#include "sm90_kernels.hpp"
#include "weight_expand.cuh"

namespace svdquant::cuda {
namespace {

__global__ void __launch_bounds__(kExpandThreads) expand_weights_kernel(const uint4* __restrict__ wfrag, uint8_t* __restrict__ wexp) {
  // The tile is assembled in shared memory and written out in 16-byte pieces (v9, 3072 x 3072:
  // the 4-byte scattered stores straight to global memory took 9.7 us, this 7.3; four tiles per
  // block, their loads in flight together, 8.1).
  __shared__ __align__(16) uint8_t tile_s[kCodeTileBytes];
  pdl_wait();  // launched with PDL (pdl.hpp)
  pdl_launch_dependents();
  const int64_t tile = blockIdx.x;  // nt * G + g
  const int f = threadIdx.x;
  expand_fragment(__ldg(wfrag + tile * kExpandThreads + f), f, tile_s);
  __syncthreads();
  store_tile(tile_s, wexp + tile * kCodeTileBytes, f);
}

}  // namespace

void launch_expand_weights(const uint8_t* wfrag, uint8_t* wexp, int64_t Nt, int64_t G, cudaStream_t stream) {
  const int64_t tiles = Nt * G;
  if (tiles == 0) return;
  launch_pdl(expand_weights_kernel, dim3(unsigned(tiles)), dim3(kExpandThreads), 0, stream, "cudaLaunchKernelEx(expand_weights_kernel)",
             reinterpret_cast<const uint4*>(wfrag), wexp);
  check_launch("expand_weights_kernel");
}

}  // namespace svdquant::cuda
