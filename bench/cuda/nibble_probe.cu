// nibble_probe: does e4m3 wgmma multiply and sum weights given as offset nibbles exactly? An
// unsigned nibble u in the low 4 bits of a byte is the e4m3 value u * 2^-9 (subnormals 1 .. 7,
// then the first normal binade 8 .. 15 at the same step), so the int4 code c stored as u = c + 8
// (bit 3 flipped) becomes a wgmma A register by two masks per 8 values (nibble_to_e4m3) instead
// of int4x8_to_e4m3's 12 instructions, and sum_k a_k c_k = 512 sum_k a_k u_k 2^-9 - 8 sum_k a_k:
// the second sum is a per-(row, group) correction a layer could add as more low-rank columns
// (docs/perf-notes.md v15). That needs the tensor cores to take e4m3 subnormals as they are.
//
// One warpgroup, one group of K = 64, m64n128k32 twice (RS, as the GEMM's register path): wgmma
// on nibble-encoded A (u), on A = 8 everywhere, and on int4x8_to_e4m3-expanded A (c), against the
// same B (128 x 64 e4m3 in the 64-byte swizzle). 512 D(u) - D(8) must equal D(c) bitwise for
// integer-valued B (int4 activations: every sum is an exact small integer), and is reported as a
// relative difference for random finite e4m3 B (fp8 activations; the tensor cores' own float32
// rounding of e4m3 sums is not exact, NUMERICS.md §5). Exit status 1 on a mismatch.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "probe_main.hpp"
#include "sm90_primitives.cuh"

using namespace svdquant::cuda::sm90;
using svdquant::probe::ck;
using svdquant::probe::require_hopper;

namespace {

constexpr int kTileBytes = 128 * 64;  // 128 rows x 64 e4m3 (one group): the code tile

// Eight unsigned nibbles (u in 0 .. 15) -> two registers of four e4m3 bytes: byte e of lo is nibble
// 2 e, of hi nibble 2 e + 1. An e4m3 byte 0000 uuuu is the value u * 2^-9, so a nibble becomes
// e4m3 by masking alone: two instructions per 8 values against int4x8_to_e4m3's 12.
__device__ __forceinline__ void nibble_to_e4m3(uint32_t w, uint32_t& lo, uint32_t& hi) {
  lo = w & 0x0F0F0F0Fu;
  hi = (w >> 4) & 0x0F0F0F0Fu;
}

// Exactness: one warpgroup, one group. B (128 x 64 e4m3, row-major bytes in global) is written
// into the 64-byte swizzle; A per thread: 4 words of nibbles (the GEMM's int4 fragment order) in
// global. D for the three encodings of the same codes goes to out[3][128 threads][64].
__global__ void __launch_bounds__(128, 1) exact_kernel(const uint8_t* b, const uint32_t* a4, float* out) {
  __shared__ __align__(1024) uint8_t bt[kTileBytes];
  for (int i = threadIdx.x; i < kTileBytes / 16; i += 128) {
    const int r = i / 4, j = i % 4;
    *reinterpret_cast<uint4*>(bt + r * 64 + 16 * (j ^ ((r / 2) % 4))) = *reinterpret_cast<const uint4*>(b + r * 64 + 16 * j);
  }
  fence_proxy_async();
  __syncthreads();
  const uint64_t desc = smem_desc_sw64(bt);
  const uint4 w = *reinterpret_cast<const uint4*>(a4 + threadIdx.x * 4);
  const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int v = 0; v < 3; ++v) {
    uint32_t r[8];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if (v == 0) {  // u = c + 8 as nibble bytes: byte e of lo = nibble e of the word, of hi nibble 4 + e
        const uint32_t x = words[i] ^ 0x88888888u;
        uint32_t q = 0;
#pragma unroll
        for (int e = 0; e < 4; ++e) q |= (((x >> (4 * e)) & 0xFu) | (((x >> (4 * (e + 4))) & 0xFu) << 4)) << (8 * e);
        nibble_to_e4m3(q, r[2 * i], r[2 * i + 1]);
      } else if (v == 1) {
        r[2 * i] = r[2 * i + 1] = 0x50505050u;  // e4m3 8.0
      } else {
        int4x8_to_e4m3(words[i], r[2 * i], r[2 * i + 1]);
      }
    }
    const uint32_t k0[4] = {r[0], r[1], r[2], r[3]}, k1[4] = {r[4], r[5], r[6], r[7]};
    float d[64];
    wgmma_fence();
    wgmma_m64n128k32_e4m3_rs(d, k0, desc, 0);
    wgmma_m64n128k32_e4m3_rs(d, k1, desc + 2, 1);
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(d);
#pragma unroll
    for (int i = 0; i < 64; ++i) out[(v * 128 + threadIdx.x) * 64 + i] = d[i];
  }
}

// Returns false where 512 D(u) - D(8) differs from D(c) (integer B) or the relative difference is
// large (random B); prints the findings.
bool exactness(bool integer_b, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> b(kTileBytes);
  const uint8_t ints[16] = {0xC0, 0xBE, 0xBC, 0xBA, 0xB8, 0xB4, 0xB0, 0xA8, 0x00, 0x38, 0x40, 0x44, 0x48, 0x4A, 0x4C, 0x4E};  // -8..7
  for (auto& v : b) {
    if (integer_b) v = ints[rng() % 16];
    else do v = uint8_t(rng()); while ((v & 0x7F) == 0x7F);  // any finite e4m3, subnormals included
  }
  std::vector<uint32_t> a(128 * 4);
  for (auto& w : a) w = rng();
  uint8_t *db = nullptr;
  uint32_t* da = nullptr;
  float* dout = nullptr;
  ck(cudaMalloc(&db, b.size()), "cudaMalloc");
  ck(cudaMalloc(&da, a.size() * 4), "cudaMalloc");
  ck(cudaMalloc(&dout, 3 * 128 * 64 * 4), "cudaMalloc");
  ck(cudaMemcpy(db, b.data(), b.size(), cudaMemcpyHostToDevice), "copy");
  ck(cudaMemcpy(da, a.data(), a.size() * 4, cudaMemcpyHostToDevice), "copy");
  exact_kernel<<<1, 128>>>(db, da, dout);
  ck(cudaGetLastError(), "exact_kernel");
  std::vector<float> o(3 * 128 * 64);
  ck(cudaMemcpy(o.data(), dout, o.size() * 4, cudaMemcpyDeviceToHost), "copy");
  cudaFree(db);
  cudaFree(da);
  cudaFree(dout);
  int mismatches = 0;
  double worst = 0.0;
  for (int i = 0; i < 128 * 64; ++i) {
    const double u = o[i], e8 = o[128 * 64 + i], c = o[2 * 128 * 64 + i];
    const double rec = 512.0 * u - e8;
    if (rec != c) ++mismatches;
    const double scale = std::fabs(e8) + std::fabs(c) + 1e-30;
    worst = std::max(worst, std::fabs(rec - c) / scale);
  }
  std::printf("exactness (%s B): 512 D(u) - D(8) vs D(c): %d of %d differ, max |diff| / (|D(8)| + |D(c)|) = %.3g\n",
              integer_b ? "integer" : "random e4m3", mismatches, 128 * 64, worst);
  return integer_b ? mismatches == 0 : worst < 1e-3;
}

}  // namespace

int main() {
  const cudaDeviceProp prop = require_hopper("nibble_probe");
  std::printf("device: %s\n", prop.name);
  bool ok = exactness(true, 1);
  ok = exactness(true, 2) && ok;
  ok = exactness(false, 3) && ok;
  ok = exactness(false, 4) && ok;
  return ok ? 0 : 1;
}
