// The int4 weights expanded to e4m3 once per call, for the GEMM's shared-memory A operand (SS
// wgmma): the consumers then neither load nor expand weight fragments, and the expansion is done
// once per weight tile instead of once per (weight tile, activation row tile) pair.
//
// In: wfrag[nt][g][wg][tid][16 bytes] (sm90_layout.hpp, the register-fragment order). Out:
// wexp[nt][g][8192], each (nt, g) tile 128 weight rows x 64 k of e4m3 bytes in the activation code
// tiles' layout (code_tile_offset: K-major rows of 64 bytes, 64-byte swizzle), so that one
// descriptor form serves both operands. One thread per 16-byte fragment: word 2h + j holds the
// registers a(2j) (low 16 bits: row g8, k = 32h + 16j + 4t + i) and a(2j + 1) (high 16 bits: row
// g8 + 8, same k), whose four e4m3 bytes are stored as one 4-byte word (k is a multiple of 4, so it
// stays inside one 16-byte chunk of the swizzle).
#include "cuda_check.hpp"
#include "pdl.hpp"
#include "sm90_kernels.hpp"
#include "sm90_layout.hpp"
#include "sm90_primitives.cuh"

namespace svdquant::cuda {
namespace {

constexpr int kThreads = 256;  // one (nt, g) tile's 256 fragments per block

__global__ void __launch_bounds__(kThreads) expand_weights_kernel(const uint4* __restrict__ wfrag, uint8_t* __restrict__ wexp) {
  // The tile is assembled in shared memory and written out in 16-byte pieces (v9, 3072 x 3072:
  // the 4-byte scattered stores straight to global memory took 9.7 us, this 7.3; four tiles per
  // block, their loads in flight together, 8.1).
  __shared__ __align__(16) uint8_t tile_s[kCodeTileBytes];
  pdl_wait();  // launched with PDL (pdl.hpp)
  pdl_launch_dependents();
  const int64_t tile = blockIdx.x;  // nt * G + g
  const int f = threadIdx.x, wg = f / 128, tid = f % 128;
  const int row = 64 * wg + 16 * (tid / 32) + (tid % 32) / 4, t = tid % 4;
  const uint4 v = __ldg(wfrag + tile * kThreads + f);
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int h = i / 2, j = i % 2, k = 32 * h + 16 * j + 4 * t;
    uint32_t lo, hi;
    sm90::int4x8_to_e4m3(w[i], lo, hi);
    *reinterpret_cast<uint32_t*>(tile_s + code_tile_offset(row, k)) = lo;
    *reinterpret_cast<uint32_t*>(tile_s + code_tile_offset(row + 8, k)) = hi;
  }
  __syncthreads();
  uint4* out = reinterpret_cast<uint4*>(wexp + tile * kCodeTileBytes);
  const uint4* in = reinterpret_cast<const uint4*>(tile_s);
#pragma unroll
  for (int i = 0; i < kCodeTileBytes / 16 / kThreads; ++i) out[i * kThreads + f] = in[i * kThreads + f];
}

}  // namespace

void launch_expand_weights(const uint8_t* wfrag, uint8_t* wexp, int64_t Nt, int64_t G, cudaStream_t stream) {
  const int64_t tiles = Nt * G;
  if (tiles == 0) return;
  static_assert(kWeightTileBytes == kThreads * 16, "one fragment per thread");
  launch_pdl(expand_weights_kernel, dim3(unsigned(tiles)), dim3(kThreads), 0, stream, "cudaLaunchKernelEx(expand_weights_kernel)",
             reinterpret_cast<const uint4*>(wfrag), wexp);
  check_launch("expand_weights_kernel");
}

}  // namespace svdquant::cuda
