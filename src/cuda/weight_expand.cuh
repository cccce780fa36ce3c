// The expansion of one (nt, g) weight tile to e4m3 (weight_expand.cu has the layouts), as device
// code that 256 threads of a block run together: by the expansion kernel, and by the extra blocks
// of the activation kernels that carry the expansion (act_quant.cu, fp8_act.cu: expansion_block).
#pragma once
#include <cstdint>

#include "sm90_layout.hpp"
#include "sm90_primitives.cuh"

namespace svdquant::cuda {

constexpr int kExpandThreads = 256;  // one tile's 256 fragments of 16 bytes
static_assert(kWeightTileBytes == kExpandThreads * 16, "one fragment per thread");

// Thread f's fragment v of a tile into the tile's e4m3 image tile_s (kCodeTileBytes of shared
// memory). Word 2h + j of the fragment holds the registers a(2j) (low 16 bits: row g8, k = 32h +
// 16j + 4t + i) and a(2j + 1) (high 16 bits: row g8 + 8, same k), whose four e4m3 bytes are stored
// as one 4-byte word (k is a multiple of 4, so it stays inside one 16-byte chunk of the swizzle).
__device__ __forceinline__ void expand_fragment(const uint4 v, const int f, uint8_t* tile_s) {
  const int wg = f / 128, tid = f % 128;
  const int row = 64 * wg + 16 * (tid / 32) + (tid % 32) / 4, t = tid % 4;
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int h = i / 2, j = i % 2, k = 32 * h + 16 * j + 4 * t;
    uint32_t lo, hi;
    sm90::int4x8_to_e4m3(w[i], lo, hi);
    *reinterpret_cast<uint32_t*>(tile_s + code_tile_offset(row, k)) = lo;
    *reinterpret_cast<uint32_t*>(tile_s + code_tile_offset(row + 8, k)) = hi;
  }
}

// The tile image from shared memory to global memory in 16-byte pieces (after a barrier that
// orders every thread's expand_fragment before it).
__device__ __forceinline__ void store_tile(const uint8_t* tile_s, uint8_t* out, const int f) {
  const uint4* in = reinterpret_cast<const uint4*>(tile_s);
  uint4* o = reinterpret_cast<uint4*>(out);
#pragma unroll
  for (int i = 0; i < kCodeTileBytes / 16 / kExpandThreads; ++i) o[i * kExpandThreads + f] = in[i * kExpandThreads + f];
}

// The weight expansion carried by an activation launch (act_quant.cu v12, fp8_act.cu): its extra
// blocks take batches of kExpandBatch tiles from counters[0] until none are left, each tile
// assembled in `smem` (kExpandBatch * kCodeTileBytes of the block's shared memory). They are
// dispatched after the activation blocks, so they fill the SMs those leave free, and the ones that
// start only when activation blocks finish find the tiles taken. The last of the `blocks`
// expansion blocks to finish resets both counters for the next call. Which block expands which
// tile does not change the output. tiles < 2^31.
constexpr int kExpandBatch = 4;  // tiles in flight per block (4 x 8 KB)
__device__ __forceinline__ void expansion_block(const uint8_t* wfrag_bytes, uint8_t* wexp, unsigned tiles, unsigned* counters,
                                                uint8_t* smem, unsigned blocks) {
  __shared__ unsigned batch_s;
  const int f = threadIdx.x;
  const uint4* wfrag = reinterpret_cast<const uint4*>(wfrag_bytes);
  for (;;) {
    if (f == 0) batch_s = atomicAdd(&counters[0], unsigned(kExpandBatch));
    __syncthreads();
    const unsigned base = batch_s;
    if (base >= tiles) break;  // block-uniform
    uint4 v[kExpandBatch];
#pragma unroll
    for (int b = 0; b < kExpandBatch; ++b)
      if (base + b < tiles) v[b] = __ldg(wfrag + int64_t(base + b) * kExpandThreads + f);
#pragma unroll
    for (int b = 0; b < kExpandBatch; ++b)
      if (base + b < tiles) expand_fragment(v[b], f, smem + b * kCodeTileBytes);
    __syncthreads();
#pragma unroll
    for (int b = 0; b < kExpandBatch; ++b)
      if (base + b < tiles) store_tile(smem + b * kCodeTileBytes, wexp + int64_t(base + b) * kCodeTileBytes, f);
    __syncthreads();  // the images and batch_s are free for the next batch
  }
  // Every block increments the second counter after its last (empty) take from the first, so the
  // last one to do so sees no other block still taking.
  if (f == 0 && atomicAdd(&counters[1], 1u) == blocks - 1) {
    counters[0] = 0;
    counters[1] = 0;
  }
}

}  // namespace svdquant::cuda
