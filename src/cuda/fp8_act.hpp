// The single-pass fp8 activation kernel (fp8_act.cu): its work plan, pure host logic (tested
// without a GPU), and its launcher. launch_act_quant (act_quant.cu) routes fp8 calls here where a
// plan exists and the device can host its clusters, and takes the two-pass path otherwise.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "sm90_kernels.hpp"

namespace svdquant::cuda {

inline constexpr int kFp8MaxCluster = 8;  // portable cluster size: the K chunks of a row block

// How one launch splits the work: a block holds `rows` rows x one K chunk of `groups` groups of 64
// columns in shared memory; the `cluster` blocks of a cluster are the chunks of one row block.
struct Fp8ActPlan {
  int rows = 0;      // 16, 32 or 64; 0: no plan (the chunk's xs does not fit in shared memory)
  int cluster = 0;   // blocks per cluster = chunks = ceil(G / groups), 1 .. kFp8MaxCluster
  int groups = 0;    // groups per chunk (the last chunk may have fewer)
  int stages = 0;    // column stages of a block's copy of x (one mbarrier each), 1 .. 4
  bool staged = false;  // the chunk's proj_down fragments and reciprocals copied to shared memory
  int exp_rows = 0;  // grid rows of clusters that carry the weight expansion (0: the caller does it)
  int smem = 0;      // dynamic shared memory per block, bytes
  int profile = 0;   // profiling variants (cuda_bench only; outputs wrong): kProfile* bits, 0 in every real plan
};
// Profiling variants: the pass over x only waits for its copies; the cluster's maxima and sums are
// not exchanged (each block uses its own); no codes are computed or stored.
inline constexpr int kProfileNoPass = 1, kProfileNoExchange = 2, kProfileNoCodes = 4;
inline constexpr int kProfileCopiesOnly = kProfileNoPass | kProfileNoExchange | kProfileNoCodes;  // every bit

// Blocks per SM the kernel's register budget is set for (__launch_bounds__).
int fp8_act_blocks_per_sm(int Rpad);
// The plan of `rows` rows per block and (about) `cluster` chunks for K (the chunk count is
// ceil(G / ceil(G / cluster))); rows = 0 where it does not fit or Rpad has no kernel. With
// `expansion` the shared memory also holds the expansion blocks' tile images. exp_rows = 0.
Fp8ActPlan fp8_act_make_plan(int rows, int cluster, int64_t K, int Rpad, bool expansion);
// The plan launch_act_quant uses for M rows on `sms` SMs (exp_tiles: the weight tiles the layer
// asks to have expanded, 0 for none); rows = 0 where none fits.
Fp8ActPlan fp8_act_plan(int64_t M, int64_t K, int Rpad, int64_t exp_tiles, int sms);
// Whether the current device can run at least one cluster of the plan (cached per device, kernel
// and shape).
bool fp8_act_schedulable(const ActQuantParams& p, const Fp8ActPlan& plan);
// One launch: codes, row scales and the low-rank sums (p.fp8 layout); with plan.exp_rows > 0 also
// the weight expansion (p.wfrag, wexp, exp_tiles, exp_counters). p's scratch (lpart, tickets,
// row_amax) is not used.
void launch_fp8_act(const ActQuantParams& p, const Fp8ActPlan& plan, cudaStream_t stream);

}  // namespace svdquant::cuda
