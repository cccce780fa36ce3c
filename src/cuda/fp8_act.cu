// The single-pass fp8 activation kernel of the cuda-sm90 backend (NUMERICS.md §2, §5, §6, §4.3):
// x is read from HBM once, the block's xs (T values) stay in shared memory until the rows' amax is
// known, and then the same block writes the e4m3 codes (sm90_layout.hpp tiles), the float32 row
// scales and the low-rank sums l = x · proj_down. launch_act_quant (act_quant.cu) routes fp8 here
// where a plan exists and the device can host its clusters (fp8_act_schedulable: the occupancy of
// one cluster, cached per device, kernel and shape); everywhere else the two passes of
// act_quant.cu run, with the same outputs (codes and row scales bitwise; the low-rank sums in
// another order). The numerics are act_quant.cu's (its header has the why of each step), shared
// through act_primitives.cuh: smooth_div.hpp's reciprocal pairs with the warp-uniform __fdiv_rn
// branch (smooth8_fast / smooth_bad / smooth8_exact), the NaN-propagating |xs| max on T bits,
// s_row = amax / 448 by __fdiv_rn (NaN for a non-finite amax), row_div.hpp's reciprocal and
// correction step (__fdiv_rn for a warp with a row outside row_fast_ok), e4m3 by the satfinite
// conversion (fp8_codes8); codes 0 for zero, non-finite and padding rows, row scale 0 for padding.
//
// Work split (fp8_act_plan). A block is 8 warps over `rows` rows (16, 32 or 64) and one K chunk of
// `groups` groups of 64 columns; the chunks of a row block are one thread-block cluster (grid
// (row blocks, chunks), cluster (1, chunks), chunks <= 8: portable). The grid covers Mpad =
// round_up(M, 128) rows: blocks of padding rows only copy nothing and write zero codes and scales.
//
// Shared memory per block: xs, rows x (groups * 128 + 16) bytes (16 bytes after each row, so that
// every warp access below moves its 512 bytes in the fewest 4 wavefronts: each 16-byte bank group
// hit by 4 lanes, checked by the host test Fp8ActPlanHost.SharedMemoryAccessesAreConflictFree),
// then a staging region: the chunk's proj_down fragments (pack_proj_down's form, RT KB a group)
// and smoothing reciprocals (512 bytes a group) where they fit beside xs (Fp8ActPlan::staged; else
// they are read from L1 / L2 as in act_quant.cu), reused after the pass for the block's rows x R
// low-rank sums. The copies are 1-D bulk copies (TMA): per stage j of the chunk (up to 4, one
// mbarrier each) one copy per real row of x into its row of xs, and one each of the fragments and
// reciprocals; a block has its whole chunk in flight at once (M = 4608, K = 3072: ~56 KB of x a
// block, ~110 KB a SM: far more than the ~30 KB needed to cover HBM latency).
//
// Pass over x. Warp = (row tile rt of 16 rows, k-set ks); wr = rows / 16 row tiles, wk = 8 / wr
// k-sets, k-set ks takes groups ks, ks + wk, ... of the chunk, in stage order. Lane roles are
// act_quant.cu's: lane = 4 g8 + t holds rows g8, g8 + 8 and, per group and k half h, columns
// 32 h + 8 t .. + 7 (one 16-byte load per row and half); the raw x words are the mma.m16n8k16 A
// fragments of the low-rank down projection in pack_proj_down's permuted k order (the layer's
// pdfrag as it is), accumulating in float32. The lane writes its xs back over x in place and keeps
// the |xs| maxima of its rows. At wr = 4 the four warps of a k-set read the same fragments.
//
// Reductions, in fixed orders (deterministic; no float atomics, no global scratch). Row maxima:
// over the 4 lanes of a row (shuffles), then an integer atomicMax into the block's amax_s (max is
// order-independent). Low-rank sums: the k-sets added in k-set order into the staging region (one
// k-set per step, a barrier between). A cluster barrier (release / acquire) then makes every
// block's maxima and sums visible to the cluster; each block takes its rows' amax over the chunks
// (distributed shared memory), computes s_row and its reciprocal into shared memory (rank 0 writes
// row_scale), and adds one slice of the row block's rows x R sums over the chunks in rank order
// (writing lact, 0 for padding rows). It arrives on a second cluster barrier once done reading
// other blocks' shared memory, and waits on it only before it exits, after its codes.
//
// Codes. Warp = (slab of 8 rows, group set); lane = row lane / 4 of the slab, columns 16 (lane %
// 4) .. + 15 of each of its groups: two 16-byte loads of xs, 16 e4m3 codes, one 16-byte store at
// code_tile_offset(row, 16 (lane % 4)): a warp store fills 8 whole rows of a code tile, 512
// contiguous bytes. The row's s_row and reciprocal are the lane's for all its groups.
//
// Weight expansion (ActQuantParams::wfrag / wexp / exp_tiles): where the plan's last wave of
// clusters leaves at least 8 resident-block slots free and the model below estimates it to end
// sooner than the separate kernel, extra grid rows of clusters run expansion_block
// (weight_expand.cuh, shared with act_quant.cu) and launch_act_quant returns true. The chunking
// never depends on it, so the outputs are bitwise the same with and without.
//
// Plan (fp8_act_plan). The largest rows whose row blocks, with up to 8 chunks, fill at least half
// a wave of resident blocks (2 per SM up to R = 32, else 1); then the chunk count (1 .. 8, those
// whose xs fits) with the least modelled time: waves x (groups x rows / 64 + a fixed 2 units per
// block), a unit being a block's time for one group of 64 rows, a wave as many blocks as whole
// clusters fit in GPCs of 16 SMs (cluster_slots). H200 (132 SMs): M = 4608, K = 3072, R = 32: 64
// rows, 6 chunks of 8 groups (432 blocks, 101 KB each, staged); M = 256: 16 rows, 8 chunks of 6
// (128 blocks); M = 4608, K = 12288: 32 rows, 8 chunks of 24 (~101 KB; the fragments then come
// from L1 / L2). xs of 16 rows x 8 chunks bounds K: up to ~28.6 K columns (R = 32), beyond that
// the two passes run.
//
// Budget (ptxas, sm_90a, no spills; staged / unstaged operands, the STAGED template argument, so
// that staged ones are read by shared-memory loads): registers R = 0 77-82 / 83-88, R = 8 91-94 /
// 101-102, R = 16 96-100 / 107-118, R = 32 114-116 / 124-126 (2 blocks per SM, 16 warps), R = 64
// and R = 128 up to 177 / 224 (1 block per SM); 896 bytes of static shared memory (kStaticSmem
// bounds it, checked at the first launch). Per element: one HBM read of x (2 bytes) and one write
// of its code (1 byte); in shared memory 2 bytes in by the copy, 2 + 2 in pass 1 (x read, xs
// written), 2 in the code pass; ~10 instructions in pass 1 (smoothing 4, range test and maxima 2,
// fragment moves and MMAs ~2), ~6 in the code pass (the quotient 4, conversion and packing 1.5).
//
// Measured (H200, first version, bench loop of launches, us): M = 4608, K = 3072, R = 32: 33.3
// (the two passes 35.8; the other plans 32.5 - 81: many small blocks are slow), with the N = 3072
// expansion carried 40.5 (separately 33.3 + 4.2 + the boundary: 41.5); M = 256: 7.7 - 8.7 (two
// passes 13.7); M = 4608, K = 12288: 114.7 (117.2). Far from the HBM floor (~10 us at K = 3072):
// ncu (M = 4608, 7 chunks) shows it latency-bound, not memory-bound: 4 warps per scheduler (the
// registers and the shared memory allow 2 blocks per SM) at 8.8 cycles per issued instruction,
// 27 % of the SM's issue rate, 14 % of DRAM bandwidth. What a block spends beside its groups
// (barrier set-up, the copy's latency, the cluster barriers, the distributed-shared-memory round
// trips) shows as a fixed ~4-8 us per block lifetime in the small-block plans. Staging the
// fragments and reciprocals in shared memory changed nothing measurable (the loads were L1 / L2
// hits); clusters of 7 pack only 32 to the GPU (ncu), hence cluster_slots.
//
// Measured again (H200, docs/perf-notes.md v16; cuda_bench, L2 evicted before each run): M = 4608,
// K = 3072, planned 64 rows x 6 chunks: 38.7 - 39.0 us; its profiling variants (Fp8ActPlan::
// profile) copies only 21.3, + codes 23.3, + exchange 23.6, + pass 1 32.1: the copies alone take
// longer than the copy engine moving the same x in and out again (cudaMemcpy, 18.2 us), whatever
// the copy size (256 B - 6 KB per bulk copy: 20.4 - 21.3 us at the good plans) or mechanism
// (16-byte cp.async: no faster, 20 % more instructions), and the work after them does not overlap
// them (blocks that run one row block after another with two xs buffers were slower still).
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <tuple>

#include "act_primitives.cuh"
#include "cuda_check.hpp"
#include "fp8_act.hpp"
#include "pdl.hpp"
#include "row_div.hpp"
#include "sm90_layout.hpp"
#include "sm90_primitives.cuh"
#include "smooth_div.hpp"
#include "weight_expand.cuh"

namespace svdquant::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kMaxRows = 64;
constexpr int kMaxStages = 4;
constexpr int kPitchPad = 16;           // bytes after each row of xs (bank spread, see the header)
constexpr int kSmemPerSM = 233472;      // H100 / H200: 228 KB of shared memory per SM ...
constexpr int kReservedPerBlock = 1024;  // ... of which the runtime reserves 1 KB per block
constexpr int kStaticSmem = 1024;       // bound of the kernel's static shared memory (checked at launch)
template <int RT> constexpr int kMinBlocks = RT <= 4 ? 2 : 1;

// A block's dynamic shared memory (see the header): xs, rows x (groups * 128 + kPitchPad) bytes,
// then the staging region: the chunk's proj_down fragments (RT * 1024 bytes a group) and smoothing
// reciprocals (512 bytes a group) during the pass over x, the block's low-rank sums (rows x R
// floats) after it.
__host__ __device__ constexpr int64_t xs_bytes(int rows, int groups) { return int64_t(rows) * (int64_t(groups) * 128 + kPitchPad); }
__host__ __device__ constexpr int64_t staging_bytes(int rows, int groups, int RT, bool staged) {
  const int64_t operands = staged ? int64_t(groups) * (RT * 1024 + 512) : 0, sums = int64_t(rows) * RT * 32;
  return operands > sums ? operands : sums;
}
static_assert(kMaxRows * kMaxStages <= kThreads, "one bulk copy per thread");
static_assert(kThreads == kExpandThreads, "the expansion blocks are blocks of this kernel");


// RT: rank tiles of 8 (Rpad = 8 RT); 0 without a low-rank branch. Grid: (row_blocks + exp_rows,
// cluster), clusters (1, cluster); the row blocks' clusters first.
template <bool BF16, int RT, bool UNS, bool STAGED>
__global__ void __launch_bounds__(kThreads, kMinBlocks<RT>)
    fp8_act_kernel(const ActQuantParams p, const Fp8ActPlan pl, const int row_blocks) {
  using H = HalfOps<BF16>;
  constexpr int R = RT * 8;
  extern __shared__ __align__(128) uint8_t smem[];
  __shared__ uint64_t bars[kMaxStages];
  __shared__ uint32_t amax_s[kMaxRows];  // the block's |xs| maximum per row (T bits)
  __shared__ float srow_s[kMaxRows], rrow_s[kMaxRows];  // s_row and its reciprocal (0 outside the fast range)
  pdl_wait();  // launched with PDL (pdl.hpp): no global access before the previous kernel is done
  pdl_launch_dependents();
  if (int(blockIdx.x) >= row_blocks) {
    expansion_block(p.wfrag, p.wexp, unsigned(p.exp_tiles), p.exp_counters, smem, (gridDim.x - unsigned(row_blocks)) * gridDim.y);
    return;
  }

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int BM = pl.rows, cs = int(gridDim.y);
  const int64_t M = p.M, K = p.K, G = K / kGroup;
  const int64_t m0 = int64_t(blockIdx.x) * BM;
  const int64_t g0 = int64_t(blockIdx.y) * pl.groups;                    // the chunk's first group
  const int gc = G - g0 < pl.groups ? int(G - g0) : pl.groups;          // its groups (>= 1)
  const int nvalid = M - m0 <= 0 ? 0 : M - m0 < BM ? int(M - m0) : BM;   // real rows of the block
  const uint32_t pitch = uint32_t(pl.groups) * 128u + kPitchPad;         // bytes per row of xs
  auto xs_at = [&](uint32_t off) { return reinterpret_cast<uint4*>(smem + off); };  // 16 bytes of xs
  uint8_t* const staging = smem + xs_bytes(BM, pl.groups);
  // The chunk's fragments [groups][2][RT][32 lanes] and reciprocals [groups * 32] (float4 = 2
  // columns): in the staging region, or (plans without room for them) read from global memory.
  // STAGED is pl.staged as a template argument, so that the loads of staged operands compile to
  // shared-memory loads (a pointer that may be either is read by generic loads, slower here).
  const uint4* const pd_s = STAGED ? reinterpret_cast<const uint4*>(staging)
                                   : reinterpret_cast<const uint4*>(p.pdfrag) + g0 * 2 * RT * 32;
  const float4* const rc_s = STAGED ? reinterpret_cast<const float4*>(staging + int64_t(pl.groups) * RT * 1024)
                                    : reinterpret_cast<const float4*>(p.smooth_rcp) + g0 * 32;
  const int sg = (pl.groups + pl.stages - 1) / pl.stages;                // groups per stage

  // The chunk: stage j (groups [j sg, (j + 1) sg)) of every real row of x is one bulk copy into
  // that row of xs, and the stage's proj_down fragments and reciprocals one copy each into the
  // staging region, all completing on bars[j]. Thread 0 sets up the barriers with their byte
  // counts before any copy is issued. A block of padding rows only copies nothing.
  const int live = nvalid > 0 ? 1 : 0;
  if (tid == 0) {
    for (int j = 0; j < pl.stages; ++j) sm90::mbar_init(&bars[j], 1);
    sm90::mbar_init_fence();
    for (int j = 0; j < pl.stages; ++j) {
      const int n = max(0, min(gc, (j + 1) * sg) - j * sg);
      sm90::mbar_arrive_expect_tx(&bars[j], uint32_t(live * n * (nvalid * 128 + (STAGED ? RT * 1024 + 512 : 0))));
    }
  }
  if (tid < BM) amax_s[tid] = 0u;
  __syncthreads();
  {
    const int j = tid / BM, r = tid % BM;
    const int gb = j * sg, ge = min(gc, gb + sg);
    if (j < pl.stages && r < nvalid && gb < ge)
      sm90::bulk_copy_g2s(smem + r * pitch + gb * 128, p.x + (m0 + r) * K + (g0 + gb) * kGroup, uint32_t(ge - gb) * 128u, &bars[j]);
  }
  if (live && STAGED && tid < pl.stages) {
    const int gb = tid * sg, ge = min(gc, gb + sg);
    if (gb < ge) {
      if constexpr (RT > 0)
        sm90::bulk_copy_g2s(staging + int64_t(gb) * RT * 1024, reinterpret_cast<const uint8_t*>(p.pdfrag) + (g0 + gb) * RT * 1024,
                            uint32_t(ge - gb) * RT * 1024u, &bars[tid]);
      sm90::bulk_copy_g2s(staging + int64_t(pl.groups) * RT * 1024 + gb * 512,
                          reinterpret_cast<const uint8_t*>(p.smooth_rcp) + (g0 + gb) * 512, uint32_t(ge - gb) * 512u, &bars[tid]);
    }
  }

  // Pass over the chunk (see the header): warp = (row tile rt, k-set ks) takes groups ks, ks + wk,
  // ... of row tile rt; lane = 4 g8 + t rows g8, g8 + 8 of it, columns 32 h + 8 t .. + 7 of each
  // k half h. xs replaces x in place; the |xs| maxima and the low-rank sums stay in registers.
  const int wr = BM / 16, wk = kWarps / wr, rt = warp % wr, ks = warp / wr;
  const int g8 = lane / 4, t = lane % 4;
  const int row0 = rt * 16 + g8;  // the lane's rows in the block: row0, row0 + 8
  const bool valid[2] = {row0 < nvalid, row0 + 8 < nvalid};
  float acc[RT > 0 ? RT : 1][4] = {};
  uint32_t row_amax16[2] = {0u, 0u};
  if (rt * 16 < nvalid) {  // row tiles of padding rows only have nothing to read
    const uint32_t rd = uint32_t(row0) * pitch + 16u * t;  // this lane's bytes of xs: + 128 g + 64 h + 8 pitch r
    int stage = ks / sg, stage_end = (stage + 1) * sg;  // g's stage, kept without a division per group
#pragma unroll 1
    for (int g = ks; g < gc; g += wk) {
      while (g >= stage_end) {
        ++stage;
        stage_end += sg;
      }
      sm90::mbar_wait(&bars[stage], 0);
      if (pl.profile & kProfileNoPass) continue;
      const int64_t gg = g0 + g;
      const uint32_t at = rd + 128u * g;
      uint4 xs[4];  // [2 h + r]
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        constexpr int kB = RT >= 4 ? 2 : RT > 0 ? RT : 1;
        const uint4* pd = pd_s + ((g * 2 + h) * RT) * 32 + lane;
        uint4 b[kB];
        if constexpr (RT > 0) {
#pragma unroll
          for (int j = 0; j < kB; ++j) b[j] = pd[j * 32];
        }
        float4 rc[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) rc[i] = rc_s[g * 32 + 16 * h + 4 * t + i];
        uint4 raw[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) raw[r] = *xs_at(at + 64u * h + 8u * pitch * r);
#pragma unroll
        for (int r = 0; r < 2; ++r) xs[2 * h + r] = smooth8_fast<BF16, UNS>(raw[r], rc);
        if constexpr (RT > 0) {
          uint32_t fa[2][4];  // the MMA A fragments of the two sub-steps (act_quant.cu's k order)
#pragma unroll
          for (int s = 0; s < 2; ++s)
#pragma unroll
            for (int e = 0; e < 4; ++e) fa[s][e] = word(raw[e % 2], 2 * s + e / 2);
#pragma unroll
          for (int jb = 0; jb < RT; jb += kB) {
            if (jb > 0) {
#pragma unroll
              for (int j = 0; j < kB; ++j) b[j] = pd[(jb + j) * 32];
            }
#pragma unroll
            for (int s = 0; s < 2; ++s)
#pragma unroll
              for (int j = 0; j < kB; ++j) mma_16816<BF16>(acc[jb + j], fa[s], word(b[j], 2 * s), word(b[j], 2 * s + 1));
          }
        }
      }
      // Range test of the fast quotients and the rare IEEE divisions (x is read again from xs,
      // not yet overwritten).
      uint32_t mx[2];
      smooth_fixup<BF16, UNS>(xs, valid, mx, [&](int h, int r) { return *xs_at(at + 64u * h + 8u * pitch * r); },
                              p.smooth + gg * kGroup + 8 * t);
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int r = 0; r < 2; ++r) *xs_at(at + 64u * h + 8u * pitch * r) = xs[2 * h + r];
#pragma unroll
      for (int r = 0; r < 2; ++r) row_amax16[r] = max(row_amax16[r], max(mx[r] & 0xFFFFu, mx[r] >> 16));
    }
  }

  // The block's row maxima (an integer max: order-independent) and low-rank sums (the k-sets added
  // in k-set order into red[BM][R], one k-set per step).
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    uint32_t m = row_amax16[r];
    m = max(m, __shfl_xor_sync(0xFFFFFFFFu, m, 1));
    m = max(m, __shfl_xor_sync(0xFFFFFFFFu, m, 2));
    if (t == 0 && valid[r]) atomicMax(&amax_s[row0 + 8 * r], m);
  }
  float* const red = reinterpret_cast<float*>(staging);  // [BM][R]
  if constexpr (RT > 0) {
    __syncthreads();  // every warp is done with the fragments and reciprocals red may overwrite
    // Accumulator element e of rank tile j: row g8 + 8 (e / 2), rank 8 j + 2 t + (e % 2).
    for (int k = 0; k < wk; ++k) {
      if (ks == k) {
#pragma unroll
        for (int j = 0; j < RT; ++j)
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            float2* d = reinterpret_cast<float2*>(red + (row0 + 8 * r) * R + 8 * j + 2 * t);
            float2 v = make_float2(acc[j][2 * r], acc[j][2 * r + 1]);
            if (k > 0) {
              const float2 o = *d;
              v = make_float2(o.x + v.x, o.y + v.y);
            }
            *d = v;
          }
      }
      if (k + 1 < wk) __syncthreads();
    }
  }

  // Every block's maxima and sums complete and visible to the cluster (release / acquire). The
  // profiling variant kProfileNoExchange reads its own block's only, as if the cluster were 1.
  const bool exchange = cs > 1 && !(pl.profile & kProfileNoExchange);
  if (exchange) sm90::cluster_sync();
  else __syncthreads();
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = cs > 1 ? int(cluster.block_rank()) : 0;
  const int ncs = exchange ? cs : 1;  // the blocks whose shared memory is read
  auto remote = [&](auto* ptr, int q) { return exchange ? cluster.map_shared_rank(ptr, q) : ptr; };
  if (tid < BM) {
    // The row's amax over the chunks (NaN above Inf above every finite value), s_row = amax / 448
    // (NaN if not finite; 0 for zero and padding rows: their codes are 0) and its reciprocal.
    // All the chunks' loads are issued before any is used (one distributed-shared-memory round
    // trip, not one per chunk).
    uint32_t part[kFp8MaxCluster];
#pragma unroll
    for (int q = 0; q < kFp8MaxCluster; ++q) part[q] = q < ncs ? *remote(&amax_s[tid], q) : 0u;
    uint32_t bits = 0u;
#pragma unroll
    for (int q = 0; q < kFp8MaxCluster; ++q) bits = max(bits, part[q]);
    if (tid >= nvalid) bits = 0u;
    const float s = bits < H::kInf ? __fdiv_rn(H::to_f32(bits), 448.0f) : __uint_as_float(0x7FC00000u);
    srow_s[tid] = s;
    rrow_s[tid] = row_fast_ok(s) ? row_reciprocal(s) : 0.0f;
    if (rank == 0) p.row_scale[m0 + tid] = s;
  }
  if constexpr (RT > 0) {
    // This block's slice of the row block's BM x R sums, added over the chunks in rank order.
    const int E = BM * R, per = (E + cs - 1) / cs, e_end = min(E, (rank + 1) * per);
    for (int e = rank * per + tid; e < e_end; e += kThreads) {
      float part[kFp8MaxCluster];  // loaded together, added in rank order
#pragma unroll
      for (int q = 0; q < kFp8MaxCluster; ++q) part[q] = q < ncs ? *remote(red + e, q) : 0.0f;
      float v = part[0];
#pragma unroll
      for (int q = 1; q < kFp8MaxCluster; ++q)
        if (q < ncs) v += part[q];
      const int row = e / R;
      p.lact[(m0 + row) * R + e % R] = row < nvalid ? v : 0.0f;
    }
  }
  if (exchange) sm90::cluster_arrive();  // done reading the other blocks' shared memory
  __syncthreads();                     // srow_s, rrow_s

  // Codes (see the header): warp = (slab of 8 rows sl, group set q); lane = row sl * 8 + lane / 4,
  // columns 16 (lane % 4) .. + 15 of each group: one 16-byte store, 512 contiguous bytes a warp.
  {
    const int slabs = BM / 8, sets = kWarps / slabs, sl = warp % slabs, q = warp / slabs;
    const int rl = sl * 8 + lane / 4, c4 = lane % 4;
    const float s = srow_s[rl], r = rrow_s[rl];
    const bool zero = !(s > 0.0f);  // zero, padding and non-finite rows: codes 0
    const bool s_normal = s >= 0x1p-126f;
    // Warp-uniform: some row with codes outside row_div.hpp's range (amax < 2^-55 or > 2^72).
    const bool slow = __any_sync(0xFFFFFFFFu, !zero && !row_fast_ok(s));
    const int64_t m = m0 + rl;
    uint8_t* out = p.codes + ((m / kTileM) * G + g0 + q) * kCodeTileBytes + code_tile_offset(int(m % kTileM), 16 * c4);
    const uint32_t src = uint32_t(rl) * pitch + 32u * c4 + 128u * q;
#pragma unroll 1
    for (int g = q; g < gc && !(pl.profile & kProfileNoCodes); g += sets) {
      uint4 c = make_uint4(0u, 0u, 0u, 0u);
      if (!zero) {
        const uint4 x0 = *xs_at(src + 128u * (g - q)), x1 = *xs_at(src + 128u * (g - q) + 16u);
        const uint2 c0 = slow ? fp8_codes8<BF16, false>(x0, s, r, s_normal) : fp8_codes8<BF16, true>(x0, s, r, s_normal);
        const uint2 c1 = slow ? fp8_codes8<BF16, false>(x1, s, r, s_normal) : fp8_codes8<BF16, true>(x1, s, r, s_normal);
        c = make_uint4(c0.x, c0.y, c1.x, c1.y);
      }
      *reinterpret_cast<uint4*>(out) = c;
      out += int64_t(sets) * kCodeTileBytes;
    }
  }
  if (exchange) sm90::cluster_wait();  // no block leaves while another may still read its shared memory
}

// Plan cost model (fp8_act_plan; see the header), in units of the time a block spends on one
// group of 64 rows (8 KB of x in, 4 KB of codes out; one expansion tile, 4 KB in and 8 KB out, is
// counted the same). Resident blocks run in waves of `slots`; a wave lasts as long as its blocks.
constexpr double kBlockFixed = 2.0;      // a block's time beside its groups: copy latency, cluster barriers
constexpr double kSeparatePerTile = 3.0;  // launch_expand_weights: ~7 us for 1152 tiles on 264 slots ...
constexpr double kSeparateFixed = 4.0;    // ... and its kernel boundary

// Resident blocks of a plan's clusters: a cluster's blocks share one GPC (16 to 18 SMs on the
// H100 / H200), so a GPC of 16 SMs holds floor(16 b / cluster) clusters at b blocks per SM (ncu,
// H200, b = 2, clusters of 7: 32 clusters, 224 of 264 slots). Clusters of 1 fill every SM.
int64_t cluster_slots(int cluster, int64_t slots, int sms) {
  if (cluster <= 1) return slots;
  const int64_t gpcs = std::max(sms / 16, 1), per_gpc = slots / std::max<int64_t>(sms, 1) * 16;
  return std::max<int64_t>(gpcs * (per_gpc / cluster) * cluster, cluster);
}

// The activation blocks alone: waves of `slots` resident blocks, each as long as its blocks.
double plan_cost(const Fp8ActPlan& pl, int64_t row_blocks, int64_t slots) {
  const int64_t blocks = row_blocks * pl.cluster;
  return double(ceil_div(blocks, slots)) * (pl.groups * pl.rows / 64.0 + kBlockFixed);
}

// The expansion rows a plan takes on (0: the caller expands): clusters in the last wave's free
// slots, no more blocks than batches of tiles, where that is estimated to end sooner than the
// activation launch followed by launch_expand_weights. A block's batch (kExpandBatch tiles)
// counts kExpandBatch units.
int expansion_rows(const Fp8ActPlan& pl, int64_t row_blocks, int64_t slots, int64_t exp_tiles) {
  if (exp_tiles <= 0 || exp_tiles >= (int64_t(1) << 31)) return 0;
  const int64_t blocks = row_blocks * pl.cluster, waves = ceil_div(blocks, slots);
  const double wave = pl.groups * pl.rows / 64.0 + kBlockFixed, act = double(waves) * wave;
  const int64_t batches = ceil_div(exp_tiles, kExpandBatch);
  const int64_t rows = std::min((waves * slots - blocks) / pl.cluster, ceil_div(batches, pl.cluster));
  if (rows * pl.cluster < 8) return 0;
  const double carried = std::max(act, double(waves - 1) * wave + kBlockFixed + kExpandBatch * double(ceil_div(batches, rows * pl.cluster)));
  const double separate = act + kSeparatePerTile * double(exp_tiles) / double(slots) + kSeparateFixed;
  return carried <= separate ? int(rows) : 0;
}

bool rank_has_kernel(int Rpad) { return Rpad == 0 || Rpad == 8 || Rpad == 16 || Rpad == 32 || Rpad == 64 || Rpad == 128; }

// Dynamic shared memory a block may have at fp8_act_blocks_per_sm blocks per SM.
int64_t smem_limit(int Rpad) { return kSmemPerSM / fp8_act_blocks_per_sm(Rpad) - kReservedPerBlock - kStaticSmem; }

using Kernel = void (*)(ActQuantParams, Fp8ActPlan, int);

template <bool BF16, bool UNS, bool STAGED>
Kernel kernel_for_rank(int Rpad) {
  switch (Rpad) {
  case 0: return fp8_act_kernel<BF16, 0, UNS, STAGED>;
  case 8: return fp8_act_kernel<BF16, 1, UNS, STAGED>;
  case 16: return fp8_act_kernel<BF16, 2, UNS, STAGED>;
  case 32: return fp8_act_kernel<BF16, 4, UNS, STAGED>;
  case 64: return fp8_act_kernel<BF16, 8, UNS, STAGED>;
  case 128: return fp8_act_kernel<BF16, 16, UNS, STAGED>;
  default: return nullptr;
  }
}
template <bool BF16, bool UNS>
Kernel kernel_for_staging(int Rpad, bool staged) {
  return staged ? kernel_for_rank<BF16, UNS, true>(Rpad) : kernel_for_rank<BF16, UNS, false>(Rpad);
}
Kernel kernel_for(const ActQuantParams& p, bool staged) {
  if (p.dtype == HalfType::BF16)
    return p.act_unsigned ? kernel_for_staging<true, true>(p.Rpad, staged) : kernel_for_staging<true, false>(p.Rpad, staged);
  return p.act_unsigned ? kernel_for_staging<false, true>(p.Rpad, staged) : kernel_for_staging<false, false>(p.Rpad, staged);
}

cudaLaunchAttribute cluster_attribute(int cluster) {
  cudaLaunchAttribute a{};
  a.id = cudaLaunchAttributeClusterDimension;
  a.val.clusterDim.x = 1;
  a.val.clusterDim.y = unsigned(cluster);
  a.val.clusterDim.z = 1;
  return a;
}

// Per device and kernel, once: the opt-in to the plans' dynamic shared memory (above the 48 KB
// default) and the check of the static shared memory the budget assumes; and per (device, kernel,
// cluster size, shared memory) whether a cluster fits on the device at all.
std::mutex cache_mutex;
std::set<std::pair<Kernel, int>> prepared;
std::map<std::tuple<Kernel, int, int, int>, bool> fits_cache;

void prepare_locked(Kernel k, int dev, int Rpad) {
  if (prepared.count({k, dev})) return;
  cudaFuncAttributes fa{};
  check(cudaFuncGetAttributes(&fa, k), "cudaFuncGetAttributes(fp8_act_kernel)");
  if (fa.sharedSizeBytes > size_t(kStaticSmem))
    throw Error("cuda-sm90: fp8_act_kernel: " + std::to_string(fa.sharedSizeBytes) + " bytes of static shared memory, budget " +
                std::to_string(kStaticSmem));
  check(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem_limit(Rpad))),
        "cudaFuncSetAttribute(fp8_act_kernel)");
  // All of the unified L1 / shared memory as shared memory, so that fp8_act_blocks_per_sm blocks
  // of the largest plans fit (the kernel reads little through L1: the unstaged plans' fragments).
  check(cudaFuncSetAttribute(k, cudaFuncAttributePreferredSharedMemoryCarveout, int(cudaSharedmemCarveoutMaxShared)),
        "cudaFuncSetAttribute(fp8_act_kernel carveout)");
  prepared.insert({k, dev});
}

}  // namespace

int fp8_act_blocks_per_sm(int Rpad) { return Rpad <= 32 ? 2 : 1; }

Fp8ActPlan fp8_act_make_plan(int rows, int cluster, int64_t K, int Rpad, bool expansion) {
  if ((rows != 16 && rows != 32 && rows != 64) || cluster < 1 || K <= 0 || K % kGroup != 0 || !rank_has_kernel(Rpad)) return {};
  const int64_t G = K / kGroup, groups = ceil_div(G, std::min<int64_t>(cluster, G)), chunks = ceil_div(G, groups);
  if (chunks > kFp8MaxCluster) return {};
  // The operands staged in shared memory where they fit beside xs.
  const auto bytes = [&](bool staged) {
    const int64_t b = xs_bytes(rows, int(groups)) + staging_bytes(rows, int(groups), Rpad / 8, staged);
    return expansion ? std::max<int64_t>(b, kExpandBatch * kCodeTileBytes) : b;
  };
  const bool staged = bytes(true) <= smem_limit(Rpad);
  const int64_t smem = bytes(staged);
  if (smem > smem_limit(Rpad)) return {};
  Fp8ActPlan pl;
  pl.staged = staged;
  pl.rows = rows;
  pl.cluster = int(chunks);
  pl.groups = int(groups);
  pl.stages = int(std::min<int64_t>(groups, kMaxStages));
  pl.smem = int(smem);
  return pl;
}

Fp8ActPlan fp8_act_plan(int64_t M, int64_t K, int Rpad, int64_t exp_tiles, int sms) {
  if (M <= 0 || sms <= 0 || K <= 0 || K % kGroup != 0) return {};
  const int64_t Mpad = round_up(M, kTileM), G = K / kGroup, slots = int64_t(fp8_act_blocks_per_sm(Rpad)) * sms;
  for (const int rows : {64, 32, 16}) {
    const int64_t row_blocks = Mpad / rows;
    // The largest row block whose clusters can fill half of a wave: the fewer row blocks, the
    // fewer reads of the proj_down fragments.
    if (rows > 16 && 2 * row_blocks * std::min<int64_t>(G, kFp8MaxCluster) < slots) continue;
    // The chunking never depends on the expansion: the low-rank sums' order (the chunks) and so
    // their bits are the same with and without it.
    Fp8ActPlan best;
    double best_cost = 0.0;
    for (int c = 1; c <= kFp8MaxCluster; ++c) {
      const Fp8ActPlan pl = fp8_act_make_plan(rows, c, K, Rpad, false);
      if (pl.rows == 0 || pl.cluster != c) continue;  // too large, or the same chunking as a smaller c
      const double cost = plan_cost(pl, row_blocks, cluster_slots(c, slots, sms));
      if (best.rows == 0 || cost < best_cost) {
        best = pl;
        best_cost = cost;
      }
    }
    if (best.rows == 0) continue;
    if (exp_tiles > 0) {
      Fp8ActPlan with = fp8_act_make_plan(rows, best.cluster, K, Rpad, true);
      with.exp_rows = with.rows ? expansion_rows(with, row_blocks, cluster_slots(with.cluster, slots, sms), exp_tiles) : 0;
      if (with.exp_rows > 0) return with;
    }
    return best;
  }
  return {};
}

bool fp8_act_schedulable(const ActQuantParams& p, const Fp8ActPlan& pl) {
  const Kernel k = kernel_for(p, pl.staged);
  if (!k || pl.rows == 0) return false;
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  std::lock_guard<std::mutex> lock(cache_mutex);
  const auto key = std::make_tuple(k, dev, pl.cluster, pl.smem);
  if (const auto it = fits_cache.find(key); it != fits_cache.end()) return it->second;
  prepare_locked(k, dev, p.Rpad);
  cudaLaunchAttribute attr[1] = {cluster_attribute(pl.cluster)};
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(1, unsigned(pl.cluster));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = size_t(pl.smem);
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  int n = 0;
  const cudaError_t e = cudaOccupancyMaxActiveClusters(&n, k, &cfg);
  if (e != cudaSuccess) (void)cudaGetLastError();  // a device without clusters of this size: the two-pass path
  const bool fits = e == cudaSuccess && n > 0;
  fits_cache[key] = fits;
  return fits;
}

void launch_fp8_act(const ActQuantParams& p, const Fp8ActPlan& pl, cudaStream_t stream) {
  const int64_t G = p.K / kGroup;
  const Kernel k = kernel_for(p, pl.staged);
  if (!k) throw UnsupportedError("cuda-sm90: padded rank " + std::to_string(p.Rpad) + " has no kernel");
  const int64_t need = xs_bytes(pl.rows, pl.groups) + staging_bytes(pl.rows, pl.groups, p.Rpad / 8, pl.staged);
  if (!p.fp8 || p.M <= 0 || p.K <= 0 || p.K % kGroup != 0 || (pl.rows != 16 && pl.rows != 32 && pl.rows != 64) ||
      pl.cluster < 1 || pl.cluster > kFp8MaxCluster || pl.groups < 1 || int64_t(pl.cluster) * pl.groups < G ||
      int64_t(pl.cluster - 1) * pl.groups >= G || pl.stages < 1 || pl.stages > std::min(pl.groups, kMaxStages) ||
      pl.smem < need || pl.smem > smem_limit(p.Rpad) || pl.exp_rows < 0 || (pl.profile & ~kProfileCopiesOnly) != 0 ||
      (pl.exp_rows > 0 && (!p.wfrag || !p.wexp || !p.exp_counters || p.exp_tiles <= 0 || p.exp_tiles >= (int64_t(1) << 31) ||
                           pl.smem < kExpandBatch * kCodeTileBytes)))
    throw Error("cuda-sm90: launch_fp8_act: inconsistent parameters or plan");
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    prepare_locked(k, dev, p.Rpad);
  }
  const int row_blocks = int(round_up(p.M, kTileM) / pl.rows);
  cudaLaunchAttribute attr[2] = {pdl_attribute(), cluster_attribute(pl.cluster)};
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(row_blocks + pl.exp_rows), unsigned(pl.cluster));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = size_t(pl.smem);
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = pl.cluster > 1 ? 2 : 1;
  check(cudaLaunchKernelEx(&cfg, k, p, pl, row_blocks), "cudaLaunchKernelEx(fp8_act_kernel)");
  check_launch("fp8_act_kernel");
}

}  // namespace svdquant::cuda
