// The nvfp4 GEMM of the cuda-sm90 backend (nvfp4_kernels.hpp): NUMERICS.md §4 with §4.1's float32
// accumulation in another summation order, and the §4.3 epilogue.
//
// Numerics. Every product (q_a·s_a)·(q_w·s_w) is exact: e2m1 × e4m3 has at most 6 significant bits
// and lies in [2^-10, 2688], so both factors are exact fp16 values (the activation kernel writes
// q_a·s_a as fp16) and their product is exact in float32. The GEMM therefore runs fp16 wgmma
// (m64n128k16, float32 accumulation) over all of K and multiplies by alpha at the end; only the
// float32 summation order differs from §4.1 (which sums the exact group sums in group order).
// The weight operand is built in registers from the 4-bit codes (so the weights stay 4-bit in
// memory and in shared memory): each code becomes the fp16 pattern of its e2m1 value · 2^-14 with
// two shifts and masks (nv_pack_word's bit order), and one fp16 multiply by the packed scale
// s_w · 2^7 gives (q_w·s_w)·2^-7, exact (at least 2^-17 with 6 significant bits: above fp16's
// subnormal step 2^-24). The sums thus carry 2^-7, taken back by alpha · 2^7 in the epilogue:
// scaling by a power of two commutes with float32 rounding, so y is RN(acc · alpha) as §4.1 says.
//
// Structure. One CTA per output tile of 256 weight rows (output columns n, wgmma's M side) x 128
// activation rows (m, wgmma's N side) and per K split; 384 threads: warpgroups 0 and 1 consume
// (each 128 weight rows as two m64 register operands, 128 float32 accumulators per thread), the
// last warpgroup produces: its first thread fills a ring of shared-memory stages with two 1-D bulk
// copies per K step of 64 (the activation tile, 16 KB, and the four packed weight blocks of the
// tile, 10 KB), completing on "full" mbarriers; every consumer thread releases a stage on its
// "empty" mbarrier once its wgmmas have read it. Per K step a consumer thread loads its codes (one
// 16-byte load per block) and row scales and builds the 2 x 4 A fragments (32 registers) of the
// next K step while the 8 wgmmas of the current one run.
// Split K (nvfp4_gemm_splits): one CTA per SM, so the tiles run in waves; where the last wave
// would fill at most half the SMs (at small M: the only wave), its tiles are split along K, each
// split's CTA writes its float32 sums to `partial`, and the tile's last CTA (integer ticket) adds
// them in split order and runs the epilogue: deterministic.
// Epilogue: ·(alpha·2^7), ·wcscales + bias (two float32 operations, §4.3), + u = l · up^T (bf16
// wgmma of split operands into the same accumulators, as the int4 GEMM does), rounded to T, staged
// transposed in shared memory by stmatrix (stage_fragment_trans; v17: GEMM 149 -> 145 us at M =
// 4608, K = N = 3072 against two-byte stores) and stored row by row.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <stdexcept>

#include "cuda_check.hpp"
#include "nvfp4_kernels.hpp"
#include "pdl.hpp"
#include "sm90_primitives.cuh"

namespace svdquant::cuda {
namespace {

using namespace sm90;

constexpr int kConsumerThreads = 256;
constexpr int kThreads = kConsumerThreads + 128;
constexpr int kConsumerRegs = 240;  // setmaxnreg: 128 x (24 + 2 x 240) <= 65536
constexpr int kActBytes = kNvTileM * kNvTileK * 2;  // 16 KB: one activation tile per K step
constexpr int kStageBytes = kActBytes + kNvWStepBytes;
constexpr int kStages = 8;
constexpr int kOutStride = kNvTileN + 8;  // T elements per staged output row
constexpr size_t kBarrierOffset = size_t(kStages) * kStageBytes;
constexpr size_t kSmemBytes = 1024 + kBarrierOffset + 2 * kStages * 8 + 16;
static_assert(kStageBytes % 128 == 0 && kActBytes % 1024 == 0);
static_assert(size_t(2) * kNvTileM * kNvMaxRank * 2 <= kBarrierOffset);  // l hi + lo
static_assert(size_t(kNvTileM) * kOutStride * 2 <= kBarrierOffset);
static_assert(kSmemBytes <= 232448);

// fp16 multiply of two packed pairs (exact here: see the top of this file).
__device__ __forceinline__ uint32_t hmul2(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("mul.rn.f16x2 %0, %1, %2;\n" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

// D[64 x 128] += A[64 x 16] (fp16, registers) * B[16 x 128] (fp16, shared, K-major).
__device__ __forceinline__ void wgmma_m64n128k16_f16_rs(float (&d)[64], const uint32_t (&a)[4], uint64_t desc_b) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "{%64, %65, %66, %67}, %68, p, 1, 1, 0;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
}

// Keeps registers allocated (and unchanged) up to this point: the wgmma reads its register
// operand asynchronously, until the wait that follows it.
__device__ __forceinline__ void hold_regs(uint32_t (&a)[4]) {
  asm volatile("" : "+r"(a[0]), "+r"(a[1]), "+r"(a[2]), "+r"(a[3])::"memory");
}

// The four A registers of one k16 step from the packed word w (nv_pack_word) and the fp16 scale
// pairs of the thread's two rows (s0: row rw, registers 0 and 2; s1: row rw + 8, registers 1, 3).
__device__ __forceinline__ void dequant_step(uint32_t w, uint32_t s0, uint32_t s1, uint32_t (&a)[4]) {
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const uint32_t pat = ((w << (3 * q)) & 0x0E000E00u) | ((w << q) & 0x80008000u);
    a[q] = hmul2(pat, q % 2 ? s1 : s0);
  }
}

template <bool BF16>
__device__ __forceinline__ uint16_t to_half(float f) {
  if constexpr (BF16) return __bfloat16_as_ushort(__float2bfloat16_rn(f));
  else return __half_as_ushort(__float2half_rn(f));
}

template <bool BF16>
__global__ void __launch_bounds__(kThreads, 1) nvfp4_gemm_kernel(const __grid_constant__ Nvfp4GemmParams p) {
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + kBarrierOffset);
  uint64_t* empty = full + kStages;
  uint32_t* flag = reinterpret_cast<uint32_t*>(empty + kStages);

  const int64_t Nt = nv_round_up(p.N, kNvTileN) / kNvTileN, KT = p.Kpad / kNvTileK;
  // CTAs below full_tiles compute whole tiles; the rest take the remaining tiles in `splits` K ranges
  // (tail: the index among the split tiles).
  const int64_t bid = blockIdx.x, tail_cta = bid - p.full_tiles;
  const bool split_tile = tail_cta >= 0 && p.splits > 1;
  const int S = split_tile ? p.splits : 1;
  const int64_t tile = tail_cta < 0 ? bid : p.full_tiles + tail_cta / p.splits;
  const int64_t tail = tile - p.full_tiles, split = tail_cta < 0 ? 0 : tail_cta % p.splits;
  const int64_t nt = tile % Nt, mt = tile / Nt;
  const int64_t steps = split_tile ? p.k_steps_per_split : KT;
  const int64_t k0 = split * steps, k1 = KT < k0 + steps ? KT : k0 + steps;
  const int nk = int(k1 - k0);

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], kConsumerThreads);
    }
    mbar_init_fence();
  }
  __syncthreads();
  // Launched with PDL (pdl.hpp): no global access before the previous kernel is done.
  pdl_wait();
  pdl_launch_dependents();

  if (threadIdx.x >= kConsumerThreads) {
    setmaxnreg_dec<24>();
    if (threadIdx.x == kConsumerThreads) {
      const uint8_t* act = reinterpret_cast<const uint8_t*>(p.act) + (mt * KT + k0) * kActBytes;
      const uint8_t* w = p.wpack + (nt * KT + k0) * kNvWStepBytes;
      for (int i = 0; i < nk; ++i) {
        const int s = i % kStages;
        if (i >= kStages) mbar_wait(&empty[s], uint32_t((i / kStages) & 1) ^ 1u);
        uint8_t* st = smem + size_t(s) * kStageBytes;
        mbar_arrive_expect_tx(&full[s], kStageBytes);
        bulk_copy_g2s(st, act + size_t(i) * kActBytes, kActBytes, &full[s]);
        bulk_copy_g2s(st + kActBytes, w + size_t(i) * kNvWStepBytes, kNvWStepBytes, &full[s]);
      }
    }
    return;
  }
  setmaxnreg_inc<kConsumerRegs>();

  const int tid = threadIdx.x, wg = tid / 128, t = tid % 128, warp = t / 32, lane = t % 32;
  const int rw = warp * 16 + lane / 4;  // this thread's rows rw, rw + 8 of each 64-row block
  float acc[2][64];
#pragma unroll
  for (int b = 0; b < 2; ++b)
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[b][i] = 0.0f;

  // Stage i's A fragments: codes (one 16-byte load per block) and the scales of rows rw, rw + 8.
  auto build = [&](int i, uint32_t (&a)[2][4][4]) {
    const int s = i % kStages;
    mbar_wait(&full[s], uint32_t((i / kStages) & 1));
    const uint8_t* st = smem + size_t(s) * kStageBytes;
#pragma unroll
    for (int b = 0; b < 2; ++b) {
      const uint8_t* blk = st + kActBytes + (2 * wg + b) * kNvWBlockBytes;
      const uint4 codes = *reinterpret_cast<const uint4*>(blk + t * 16);
      const uint2 sc0 = *reinterpret_cast<const uint2*>(blk + 2048 + rw * 8);
      const uint2 sc1 = *reinterpret_cast<const uint2*>(blk + 2048 + (rw + 8) * 8);
      const uint32_t cw[4] = {codes.x, codes.y, codes.z, codes.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        // The scale of group j (one k16 step) in both halves of a register.
        const uint32_t w0 = j < 2 ? sc0.x : sc0.y, w1 = j < 2 ? sc1.x : sc1.y;
        const uint32_t sel = j % 2 ? 0x3232u : 0x1010u;
        dequant_step(cw[j], __byte_perm(w0, 0, sel), __byte_perm(w1, 0, sel), a[b][j]);
      }
    }
  };
  auto issue = [&](int i, uint32_t (&a)[2][4][4]) {
    const uint8_t* st = smem + size_t(i % kStages) * kStageBytes;
    wgmma_fence();
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      // k16 step j: core matrices 2j, 2j + 1 along K (2048 bytes apart), 8-row groups 128 apart.
      const uint64_t db = smem_desc(st + j * 2 * 2048, 2048, 128);
#pragma unroll
      for (int b = 0; b < 2; ++b) wgmma_m64n128k16_f16_rs(acc[b], a[b][j], db);
    }
    wgmma_commit();
  };
  auto retire = [&](int i, uint32_t (&a)[2][4][4]) {
    wgmma_wait<0>();
#pragma unroll
    for (int b = 0; b < 2; ++b) {
      fence_regs(acc[b]);
#pragma unroll
      for (int j = 0; j < 4; ++j) hold_regs(a[b][j]);
    }
    mbar_arrive(&empty[i % kStages]);
  };
  {
    // Stage i + 1's fragments are built while stage i's wgmmas run (two register sets; v13: GEMM
    // 168.5 -> 160.2 us at M = 4608, K = N = 3072, against building and waiting stage by stage).
    uint32_t a0[2][4][4], a1[2][4][4];
    build(0, a0);
    for (int i = 0; i < nk; i += 2) {
      issue(i, a0);
      if (i + 1 < nk) build(i + 1, a1);
      retire(i, a0);
      if (i + 1 >= nk) break;
      issue(i + 1, a1);
      if (i + 2 < nk) build(i + 2, a0);
      retire(i + 1, a1);
    }
  }

  // Split K: the partial sums of this split, then the tile's last CTA adds all in split order.
  if (split_tile) {
    float4* part = reinterpret_cast<float4*>(p.partial) + (tail * S + split) * (kConsumerThreads * 32);
#pragma unroll
    for (int b = 0; b < 2; ++b)
#pragma unroll
      for (int i4 = 0; i4 < 16; ++i4)
        part[(b * 16 + i4) * kConsumerThreads + tid] =
            make_float4(acc[b][4 * i4], acc[b][4 * i4 + 1], acc[b][4 * i4 + 2], acc[b][4 * i4 + 3]);
    __threadfence();
    named_barrier(1, kConsumerThreads);
    if (tid == 0) {
      const uint32_t ticket = atomicAdd(&p.tickets[tail], 1u);
      const bool last = ticket == uint32_t(S - 1);
      if (last) p.tickets[tail] = 0;  // ready for the next call (stream-ordered)
      *flag = last;
    }
    named_barrier(1, kConsumerThreads);
    if (!*flag) return;
    __threadfence();
    // Split order, whichever CTA is last; per block of 64 rows 16 loads in flight at a time.
    const float4* base = reinterpret_cast<const float4*>(p.partial) + tail * S * (kConsumerThreads * 32);
#pragma unroll
    for (int b = 0; b < 2; ++b)
      for (int sp = 0; sp < S; ++sp) {
        float4 v[16];
#pragma unroll
        for (int i4 = 0; i4 < 16; ++i4) v[i4] = __ldcg(&base[(size_t(sp) * 32 + b * 16 + i4) * kConsumerThreads + tid]);
#pragma unroll
        for (int i4 = 0; i4 < 16; ++i4) {
          float* d = &acc[b][4 * i4];
          if (sp == 0) {
            d[0] = v[i4].x, d[1] = v[i4].y, d[2] = v[i4].z, d[3] = v[i4].w;
          } else {
            d[0] = __fadd_rn(d[0], v[i4].x), d[1] = __fadd_rn(d[1], v[i4].y);
            d[2] = __fadd_rn(d[2], v[i4].z), d[3] = __fadd_rn(d[3], v[i4].w);
          }
        }
      }
  }

  // Epilogue. acc[b][i], i = 4 c8 + 2 hh + e: weight row (output column) 128 wg + 64 b + rw + 8 hh
  // of the tile, activation row (output row) 8 c8 + 2 (lane % 4) + e.
  const int64_t n0 = nt * kNvTileN, m0 = mt * kNvTileM;
  const float scale = __fmul_rn(p.alpha, float(1 << kNvWScaleShift));
#pragma unroll
  for (int b = 0; b < 2; ++b)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int64_t n = n0 + 128 * wg + 64 * b + rw + 8 * hh;
      const float wc = p.wcscales[n], bi = p.bias[n];
#pragma unroll
      for (int c8 = 0; c8 < 16; ++c8)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& d = acc[b][4 * c8 + 2 * hh + e];
          d = __fadd_rn(__fmul_rn(__fmul_rn(d, scale), wc), bi);
        }
    }
  if (p.Rpad > 0) {
    // + u = l · up^T on the tensor cores, into the accumulators that hold y (NUMERICS.md §4.3 and
    // its note on cuda-sm90): l (float32) split into bf16 hi + lo in shared memory as wgmma's B
    // operand (the K-major core-matrix layout of the act tiles, ranks as K), up as the register A
    // operand in bf16 (exact for bf16 checkpoints; fp16 values split into hi + lo, exact too);
    // products exact, float32 accumulation: u agrees with the reference to ~2^-17 of Σ|l·up|.
    uint8_t* lhi = smem;                      // [Rpad / 8][128 m / 8][8][8] bf16
    uint8_t* llo = smem + kNvTileM * p.Rpad * 2;
    named_barrier(1, kConsumerThreads);
    for (int x = tid; x < kNvTileM * (p.Rpad / 8); x += kConsumerThreads) {
      const int m = x % kNvTileM, r8 = x / kNvTileM;
      const float4* src = reinterpret_cast<const float4*>(p.lact + (m0 + m) * p.Rpad + 8 * r8);
      const float4 f0 = src[0], f1 = src[1];
      const float f[8] = {f0.x, f0.y, f0.z, f0.w, f1.x, f1.y, f1.z, f1.w};
      uint32_t hi[4], lo[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        uint16_t h[2], l[2];
#pragma unroll
        for (int u = 0; u < 2; ++u) {
          const Bf16Split sp = bf16_split(f[2 * e + u]);
          h[u] = sp.hi;
          l[u] = sp.lo;
        }
        hi[e] = h[0] | uint32_t(h[1]) << 16;
        lo[e] = l[0] | uint32_t(l[1]) << 16;
      }
      const int off = r8 * (kNvTileM * 16) + (m / 8) * 128 + (m % 8) * 16;
      *reinterpret_cast<uint4*>(lhi + off) = make_uint4(hi[0], hi[1], hi[2], hi[3]);
      *reinterpret_cast<uint4*>(llo + off) = make_uint4(lo[0], lo[1], lo[2], lo[3]);
    }
    fence_proxy_async();  // generic-proxy stores, read next by the wgmma (async proxy)
    named_barrier(1, kConsumerThreads);
    const int c = lane % 4;
    for (int kk = 0; kk < p.Rpad / 16; ++kk) {
      const uint64_t dhi = smem_desc(lhi + kk * 2 * (kNvTileM * 16), kNvTileM * 16, 128);
      const uint64_t dlo = smem_desc(llo + kk * 2 * (kNvTileM * 16), kNvTileM * 16, 128);
      // A registers of both blocks: (row rw, ranks 2c, 2c+1), (rw + 8, same), (rw, +8), (rw + 8, +8).
      uint32_t ahi[2][4], alo[2][4];
#pragma unroll
      for (int b = 0; b < 2; ++b)
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int64_t n = n0 + 128 * wg + 64 * b + rw + 8 * (q % 2);
          const float2 v = __ldg(reinterpret_cast<const float2*>(p.proj_up + n * p.Rpad + 16 * kk + 2 * c + 8 * (q / 2)));
          const Bf16Split x0 = bf16_split(v.x), x1 = bf16_split(v.y);
          ahi[b][q] = x0.hi | uint32_t(x1.hi) << 16;
          alo[b][q] = x0.lo | uint32_t(x1.lo) << 16;
        }
      wgmma_fence();
#pragma unroll
      for (int b = 0; b < 2; ++b) {
        wgmma_m64n128k16_bf16_rs(acc[b], ahi[b], dhi, 1u);
        wgmma_m64n128k16_bf16_rs(acc[b], ahi[b], dlo, 1u);
        if constexpr (!BF16) wgmma_m64n128k16_bf16_rs(acc[b], alo[b], dhi, 1u);
      }
      wgmma_commit();
      wgmma_wait<0>();
#pragma unroll
      for (int b = 0; b < 2; ++b) {
        fence_regs(acc[b]);
        hold_regs(ahi[b]);
        hold_regs(alo[b]);
      }
    }
  }
  // Staged as [m][n] T in shared memory, then stored row by row (16-byte chunks where aligned).
  named_barrier(1, kConsumerThreads);
  uint16_t* so = reinterpret_cast<uint16_t*>(smem);
#pragma unroll
  for (int b = 0; b < 2; ++b)  // by stmatrix .trans: weight rows 128 wg + 64 b + 16 warp .. + 15 of each staged row
    stage_fragment_trans(so + 128 * wg + 64 * b + 16 * warp, kOutStride, lane, [&](int j, int h) {
      return uint32_t(to_half<BF16>(acc[b][4 * j + 2 * h])) | uint32_t(to_half<BF16>(acc[b][4 * j + 2 * h + 1])) << 16;
    });
  named_barrier(1, kConsumerThreads);
  const bool vec = p.N % 8 == 0 && (reinterpret_cast<uintptr_t>(p.y) & 15) == 0;
  constexpr int kChunks = kNvTileN / 8;  // 16-byte chunks per staged row
  for (int x = tid; x < kNvTileM * kChunks; x += kConsumerThreads) {
    const int row = x / kChunks, ch = x % kChunks;
    const int64_t m = m0 + row, n = n0 + ch * 8;
    if (m >= p.M || n >= p.N) continue;
    const uint16_t* src = so + row * kOutStride + ch * 8;
    uint16_t* dst = p.y + m * p.N + n;
    if (vec) {
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
    } else {
      for (int e = 0; e < 8 && n + e < p.N; ++e) dst[e] = src[e];
    }
  }
}

}  // namespace

Nvfp4Split nvfp4_gemm_splits(int64_t M, int64_t N, int64_t Kpad, int sms) {
  Nvfp4Split s;
  const int64_t tiles = (nv_round_up(N, kNvTileN) / kNvTileN) * (nv_round_up(M, kNvTileM) / kNvTileM);
  const int64_t KT = Kpad / kNvTileK;
  // One CTA per SM (shared memory): the tiles run in waves of `sms`. Complete waves stay whole;
  // a last wave that fills at most half the SMs is split along K (every split keeps at least 4 K
  // steps), so that it takes a fraction of a tile's time instead of a whole one (v13: M = 4608,
  // K = N = 3072, 36 tiles x 3 splits after 3 whole waves: GEMM 160.3 -> 147.8 us).
  const int64_t waves = sms > 0 ? tiles / sms : 0;
  const int64_t tail = sms > 0 ? tiles - waves * sms : 0;
  int64_t splits = 1;
  if (sms > 0 && tail > 0 && 2 * tail <= sms) splits = std::min<int64_t>(sms / tail, KT / 4);
  splits = std::max<int64_t>(splits, 1);
  const int64_t per = (KT + splits - 1) / splits;
  splits = (KT + per - 1) / per;  // no empty split
  s.splits = int(splits);
  s.k_steps_per_split = int(per);
  s.full_tiles = splits > 1 ? waves * sms : tiles;
  if (splits > 1) {
    s.partial_bytes = size_t((tiles - s.full_tiles) * splits) * kNvTileN * kNvTileM * 4;
    s.ticket_bytes = size_t(tiles - s.full_tiles) * 4;
  }
  return s;
}

void launch_nvfp4_gemm(const Nvfp4GemmParams& p, cudaStream_t stream) {
  if (p.M <= 0 || p.N <= 0) return;
  if (p.splits < 1 || p.k_steps_per_split < 1 || p.full_tiles < 0 || (p.splits > 1 && (!p.partial || !p.tickets)))
    throw std::invalid_argument("launch_nvfp4_gemm: splits not set (nvfp4_gemm_splits)");
  const int64_t tiles = (nv_round_up(p.N, kNvTileN) / kNvTileN) * (nv_round_up(p.M, kNvTileM) / kNvTileM);
  const int64_t full = std::min(p.full_tiles, tiles);
  const dim3 grid(unsigned(full + (tiles - full) * p.splits));
  auto go = [&](auto kernel) {
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kSmemBytes)),
          "cudaFuncSetAttribute(nvfp4_gemm)");
    launch_pdl(kernel, grid, dim3(kThreads), kSmemBytes, stream, "cudaLaunchKernelEx(nvfp4_gemm)", p);
  };
  if (p.dtype == HalfType::BF16) go(nvfp4_gemm_kernel<true>);
  else go(nvfp4_gemm_kernel<false>);
  check_launch("nvfp4_gemm_kernel");
}

}  // namespace svdquant::cuda
