// The fused activation kernel of the cuda-sm90 backend: one pass over x that applies the shift
// and the smoothing (NUMERICS.md §2), quantizes every group of 64 to int4 codes and a T scale
// (§3, bit-exact with the CPU reference: the same float32 operations, each rounded once, and the
// exact reciprocal of the stored scale), and computes the low-rank down projection
// l = x · proj_down (§4.3) with bf16/fp16 tensor-core MMAs accumulating in float32. Products of
// two T values are exact in float32, so this is §4.3's float32 sum in another order (allowed).
//
// fp8 activations (§5) need the amax of a whole row before any code: the same kernel (FP8 = true)
// computes xs, the low-rank partial sums and each group's amax, folded into the row's amax with an
// integer atomicMax on the float bits (max is order-independent, so this is deterministic; NaN's
// bits are above every finite value's and Inf's); a second kernel (fp8_quant_kernel) recomputes
// xs (x is L2-resident by then), divides by s_row = amax / 448 and writes the e4m3 codes into the
// GEMM's tile layout and the row scales.
//
// Grid: (row tiles of 16, K chunks of up to 8 groups). Block: 8 warps, warp w handles group w of
// its chunk. Each warp keeps its low-rank partial sums in registers; the block adds them in warp
// order, writes its chunk's partial sums, and the last block of a row tile to finish (an integer
// ticket counter) adds the chunks' partials in chunk order. The result does not depend on
// scheduling (no float atomics); the counter is reset by that last block for the next call.
//
// proj_down fragment order (built by prepare, see sm90_layer.cpp): for group g, k-step kk of 16,
// rank tile j of 8 and lane l, two words at ((g*4 + kk) * RT + j) * 32 + l: the mma.m16n8k16 B
// registers b0 = (pd[kb+2t][n], pd[kb+2t+1][n]) and b1 = (pd[kb+2t+8][n], pd[kb+2t+9][n]),
// kb = 64 g + 16 kk, n = 8 j + l / 4, t = l % 4 (low half = lower k; zero for n >= R).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "sm90_kernels.hpp"
#include "sm90_layout.hpp"
#include "cuda_check.hpp"

namespace svdquant::cuda {
namespace {

constexpr int kRowsPerBlock = 16;
constexpr int kWarps = 8;
constexpr int kXStride = kGroup + 8;  // smem row stride of the x tile in elements (144 bytes)

template <bool BF16> struct HalfOps;
template <> struct HalfOps<true> {
  static __device__ float to_f32(uint16_t b) { return __uint_as_float(uint32_t(b) << 16); }
  static __device__ uint16_t from_f32(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }
  static constexpr uint16_t kNaN = 0x7FC0;
};
template <> struct HalfOps<false> {
  static __device__ float to_f32(uint16_t b) { return __half2float(__ushort_as_half(b)); }
  static __device__ uint16_t from_f32(float f) { return __half_as_ushort(__float2half_rn(f)); }
  static constexpr uint16_t kNaN = 0x7E00;
};

// NaN-propagating max (NUMERICS.md §6): fmaxf alone would drop a NaN.
__device__ __forceinline__ float nan_max(float a, float b) {
  return (a != a || b != b) ? __uint_as_float(0x7FC00000u) : fmaxf(a, b);
}

template <bool BF16>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (BF16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&a)[4], const void* smem_row) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
               : "r"(addr));
}

// §2: shift and smooth one element, each step rounded to T.
template <class H>
__device__ __forceinline__ float smoothed(uint16_t x, float smooth, bool act_unsigned) {
  float v = H::to_f32(x);
  if (act_unsigned) v = H::to_f32(H::from_f32(__fadd_rn(v, 0.171875f)));
  return H::to_f32(H::from_f32(__fdiv_rn(v, smooth)));
}

// RT: rank tiles of 8 (Rpad = 8 RT); 0 when the layer has no low-rank branch. FP8: the first pass
// of §5 (row amax instead of codes).
template <bool BF16, int RT, bool FP8>
__global__ void __launch_bounds__(kWarps * 32, RT <= 4 ? 3 : 2) act_quant_kernel(const ActQuantParams p) {
  using H = HalfOps<BF16>;
  __shared__ __align__(16) uint16_t xtile[kWarps][kRowsPerBlock][kXStride];
  __shared__ float lsum[kRowsPerBlock][RT > 0 ? RT * 8 : 1];

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int cc = lane % 8;   // 8-element column chunk of the group
  const int rr = lane / 8;   // rows rr, rr + 4, rr + 8, rr + 12 of the block
  const int64_t m0 = int64_t(blockIdx.x) * kRowsPerBlock;
  const int64_t G = p.K / kGroup;
  const int chunk = int(blockIdx.y), chunks = int(gridDim.y);
  const float inv_qmax = p.act_unsigned ? __uint_as_float(0x3D888889u) : __uint_as_float(0x3E124925u);
  const int qmin = p.act_unsigned ? 0 : -8, qmax = p.act_unsigned ? 15 : 7;

  float acc[RT > 0 ? RT : 1][4] = {};

  for (int64_t g = int64_t(chunk) * kWarps + warp; g < G && g < int64_t(chunk + 1) * kWarps; g += kWarps) {
    const int64_t k0 = g * kGroup + cc * 8;
    // The low-rank B fragments of this group do not depend on x: the first kPre of them are
    // loaded now, so their latency overlaps that of the x loads (v4; before, all of them were a
    // second round trip). 8 fragments (16 registers) keep R = 32 within 3 blocks per SM unspilled.
    constexpr int kPre = RT > 0 ? (4 * RT < 8 ? 4 * RT : 8) : 1;
    uint2 bpre[kPre];
    if constexpr (RT > 0) {
      const uint2* pd = reinterpret_cast<const uint2*>(p.pdfrag) + (g * 4) * RT * 32 + lane;
#pragma unroll
      for (int i = 0; i < kPre; ++i) bpre[i] = __ldg(pd + i * 32);
    }
    float sm[8];
    {
      const uint4 v = *reinterpret_cast<const uint4*>(p.smooth + k0);
      const uint16_t* h = reinterpret_cast<const uint16_t*>(&v);
#pragma unroll
      for (int e = 0; e < 8; ++e) sm[e] = H::to_f32(h[e]);
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = rr + 4 * i;
      const int64_t m = m0 + r;
      const bool valid = m < p.M;
      uint4 raw = make_uint4(0, 0, 0, 0);
      if (valid) raw = *reinterpret_cast<const uint4*>(p.x + m * p.K + k0);
      *reinterpret_cast<uint4*>(&xtile[warp][r][cc * 8]) = raw;

      const uint16_t* h = reinterpret_cast<const uint16_t*>(&raw);
      float xs[8];
      float amax = 0.0f;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        xs[e] = smoothed<H>(h[e], sm[e], p.act_unsigned);
        amax = nan_max(amax, fabsf(xs[e]));
      }
      amax = nan_max(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, 1));
      amax = nan_max(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, 2));
      amax = nan_max(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, 4));
      if constexpr (FP8) {
        if (cc == 0 && valid) atomicMax(&p.row_amax[m], __float_as_uint(amax));
        continue;
      }

      // §3 / §6: the stored scale, then codes from the exact reciprocal of it.
      uint16_t s_bits = H::from_f32(__fmul_rn(amax, inv_qmax));
      const float s = H::to_f32(s_bits);
      bool zero_codes = !valid || !(s != 0.0f) || isinf(s);
      if (!valid) s_bits = 0;
      if (!isfinite(amax) && valid) {
        s_bits = H::kNaN;
        zero_codes = true;
      }
      const float rcp = zero_codes ? 0.0f : __frcp_rn(s);
      uint32_t packed[2];
#pragma unroll
      for (int e = 0; e < 8; e += 2) {
        int q0 = 0, q1 = 0;
        if (!zero_codes) {
          q0 = min(max(__float2int_rn(__fmul_rn(xs[e], rcp)), qmin), qmax);
          q1 = min(max(__float2int_rn(__fmul_rn(xs[e + 1], rcp)), qmin), qmax);
        }
        const __nv_fp8x2_storage_t c2 =
            __nv_cvt_float2_to_fp8x2(make_float2(float(q0), float(q1)), __NV_SATFINITE, __NV_E4M3);
        const uint32_t c = uint32_t(c2);
        if ((e & 2) == 0) packed[e / 4] = c; else packed[e / 4] |= c << 16;
      }
      const int64_t mt = m / kTileM;
      const int rt = int(m % kTileM);
      uint8_t* tile = p.codes + (mt * G + g) * kCodeTileBytes;
      *reinterpret_cast<uint2*>(tile + code_tile_offset(rt, cc * 8)) = make_uint2(packed[0], packed[1]);
      if (cc == 0) {
        const int64_t at = (mt * G + g) * kTileM + rt;
        if (p.scale_f32) reinterpret_cast<float*>(p.ascale)[at] = H::to_f32(s_bits);
        else p.ascale[at] = s_bits;
      }
    }

    if constexpr (RT > 0) {
      __syncwarp();
      const uint2* pd = reinterpret_cast<const uint2*>(p.pdfrag) + (g * 4) * RT * 32 + lane;
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        uint32_t a[4];
        ldmatrix_x4(a, &xtile[warp][lane % 16][kk * 16 + (lane / 16) * 8]);
#pragma unroll
        for (int j = 0; j < RT; ++j) {
          const int i = kk * RT + j;
          const uint2 b = i < kPre ? bpre[i % kPre] : __ldg(pd + i * 32);
          mma_16816<BF16>(acc[j], a, b.x, b.y);
        }
      }
    }
    __syncwarp();
  }

  if constexpr (RT > 0) {
    // Add the warps' partial sums in warp order (deterministic).
    const int g8 = lane / 4, t = lane % 4;
    for (int w = 0; w < kWarps; ++w) {
      if (warp == w) {
#pragma unroll
        for (int j = 0; j < RT; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int row = g8 + (e / 2) * 8, col = j * 8 + 2 * t + (e % 2);
            lsum[row][col] = (w == 0) ? acc[j][e] : lsum[row][col] + acc[j][e];
          }
        }
      }
      __syncthreads();
    }
    constexpr int R = RT * 8;
    if (chunks == 1) {
      for (int i = threadIdx.x; i < kRowsPerBlock * R; i += kWarps * 32) {
        const int row = i / R, col = i % R;
        p.lact[(m0 + row) * R + col] = lsum[row][col];
      }
      return;
    }
    const int64_t Mpad = int64_t(gridDim.x) * kRowsPerBlock;
    for (int i = threadIdx.x; i < kRowsPerBlock * R; i += kWarps * 32) {
      const int row = i / R, col = i % R;
      p.lpart[(int64_t(chunk) * Mpad + m0 + row) * R + col] = lsum[row][col];
    }
    __threadfence();
    __syncthreads();
    __shared__ bool last;
    if (threadIdx.x == 0) {
      last = atomicAdd(&p.tickets[blockIdx.x], 1u) == unsigned(chunks - 1);
      if (last) p.tickets[blockIdx.x] = 0;  // every block of this row tile has taken its ticket
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    for (int i = threadIdx.x; i < kRowsPerBlock * R; i += kWarps * 32) {
      const int row = i / R, col = i % R;
      float sum = __ldcg(&p.lpart[(m0 + row) * R + col]);
      for (int c = 1; c < chunks; ++c) sum += __ldcg(&p.lpart[(int64_t(c) * Mpad + m0 + row) * R + col]);
      p.lact[(m0 + row) * R + col] = sum;
    }
  }
}

// §5, second pass: one thread per 8 consecutive elements of a padded row.
template <bool BF16>
__global__ void __launch_bounds__(256) fp8_quant_kernel(const ActQuantParams p) {
  using H = HalfOps<BF16>;
  const int64_t K8 = p.K / 8, Mpad = round_up(p.M, kTileM);
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= Mpad * K8) return;
  const int64_t m = i / K8, k0 = (i % K8) * 8;
  const bool valid = m < p.M;
  const uint32_t bits = valid ? p.row_amax[m] : 0u;
  const bool finite = bits < 0x7F800000u;
  const float s_row = finite ? __fdiv_rn(__uint_as_float(bits), 448.0f) : __uint_as_float(0x7FC00000u);
  if (k0 == 0) p.row_scale[m] = valid ? s_row : 0.0f;
  uint32_t packed[2] = {0u, 0u};
  if (valid && finite && s_row != 0.0f) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p.x + m * p.K + k0);
    const uint4 smv = *reinterpret_cast<const uint4*>(p.smooth + k0);
    const uint16_t* h = reinterpret_cast<const uint16_t*>(&raw);
    const uint16_t* sh = reinterpret_cast<const uint16_t*>(&smv);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const float q = __fdiv_rn(smoothed<H>(h[e], H::to_f32(sh[e]), p.act_unsigned), s_row);
      // e4m3 RNE; a quotient that rounds above 448 (|q| > 464) is NaN (NUMERICS.md §1).
      const uint32_t c = fabsf(q) > 464.0f ? 0x7Fu : uint32_t(__nv_cvt_float_to_fp8(q, __NV_SATFINITE, __NV_E4M3));
      packed[e / 4] |= c << (8 * (e % 4));
    }
  }
  const int64_t G = p.K / kGroup;
  uint8_t* tile = p.codes + ((m / kTileM) * G + k0 / kGroup) * kCodeTileBytes;
  *reinterpret_cast<uint2*>(tile + code_tile_offset(int(m % kTileM), int(k0 % kGroup))) = make_uint2(packed[0], packed[1]);
}

template <bool BF16, bool FP8>
void launch_pass(const ActQuantParams& p, cudaStream_t stream) {
  const int64_t Mpad = round_up(p.M, kTileM);
  const dim3 grid(unsigned(Mpad / kRowsPerBlock), unsigned(act_quant_chunks(p.K))), block(kWarps * 32);
  switch (p.Rpad) {
    case 0: act_quant_kernel<BF16, 0, FP8><<<grid, block, 0, stream>>>(p); break;
    case 8: act_quant_kernel<BF16, 1, FP8><<<grid, block, 0, stream>>>(p); break;
    case 16: act_quant_kernel<BF16, 2, FP8><<<grid, block, 0, stream>>>(p); break;
    case 32: act_quant_kernel<BF16, 4, FP8><<<grid, block, 0, stream>>>(p); break;
    case 64: act_quant_kernel<BF16, 8, FP8><<<grid, block, 0, stream>>>(p); break;
    case 128: act_quant_kernel<BF16, 16, FP8><<<grid, block, 0, stream>>>(p); break;
    default: throw UnsupportedError("cuda-sm90: padded rank " + std::to_string(p.Rpad) + " has no kernel");
  }
  check_launch("act_quant_kernel");
}

template <bool BF16>
void launch_typed(const ActQuantParams& p, cudaStream_t stream) {
  if (!p.fp8) return launch_pass<BF16, false>(p, stream);
  const int64_t Mpad = round_up(p.M, kTileM);
  check(cudaMemsetAsync(p.row_amax, 0, size_t(Mpad) * sizeof(unsigned), stream), "cudaMemsetAsync(row_amax)");
  launch_pass<BF16, true>(p, stream);
  const int64_t threads = Mpad * (p.K / 8);
  fp8_quant_kernel<BF16><<<unsigned(ceil_div(threads, 256)), 256, 0, stream>>>(p);
  check_launch("fp8_quant_kernel");
}

}  // namespace

int act_quant_chunks(int64_t K) { return int(ceil_div(K / kGroup, kWarps)); }

void launch_act_quant(const ActQuantParams& p, cudaStream_t stream) {
  if (p.M == 0) return;
  if (p.dtype == HalfType::BF16) launch_typed<true>(p, stream);
  else launch_typed<false>(p, stream);
}

}  // namespace svdquant::cuda
