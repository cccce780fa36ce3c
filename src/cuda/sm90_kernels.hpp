// Launchers of the cuda-sm90 kernels (defined in the .cu files). Plain structs of device
// pointers; every launcher takes the stream and checks the launch.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace svdquant::cuda {

enum class HalfType : uint8_t { BF16, FP16 };

// NUMERICS.md §2, §3 (int4) and §4.3 (low-rank down): one pass over x. With fp8 (§5): one pass
// that keeps the rows' xs in shared memory until their amax is known (fp8_act.cu), or, where that
// does not apply, two passes, the first for the row amax and the low-rank down projection, the
// second for the e4m3 codes (same tile layout) and the float32 row scales. The output and scratch
// buffers are sized and owned by ActWorkspace (act_workspace.hpp), which fills them in (the
// single-pass kernel uses none of the scratch; the two passes, its fallback, keep needing it).
struct ActQuantParams {
  const uint16_t* x = nullptr;        // [M, K] T
  const uint16_t* smooth = nullptr;   // [K] T
  const float* smooth_rcp = nullptr;  // [K][2] reciprocal pairs (pack_smooth_reciprocal)
  const uint32_t* pdfrag = nullptr;   // proj_down in mma B-fragment order (pack_proj_down, act_quant.cu)
  uint8_t* codes = nullptr;           // [Mt][G][8192] e4m3 (sm90_layout.hpp)
  uint16_t* ascale = nullptr;         // [Mt][G][128] T, or float32 (the same values) with scale_f32
  float* lact = nullptr;              // [Mpad, Rpad] float32
  // With act_quant_chunking(Mpad, K).chunks > 1: per-chunk partial sums [chunks, Mpad, Rpad] and
  // act_quant_tickets(Mpad) ticket counters, zero before the first call (the kernel leaves them
  // zero).
  float* lpart = nullptr;
  unsigned* tickets = nullptr;
  int64_t M = 0, K = 0;
  int Rpad = 0;                       // multiple of 8, <= kMaxRank; 0: no low-rank branch
  bool act_unsigned = false;
  bool scale_f32 = false;
  HalfType dtype = HalfType::BF16;
  // fp8 activations (§5): row_amax [act_quant_amax_words(Mpad)] (pass 1's partial maxima as
  // float bits; scratch, no initial contents needed) and row_scale [Mpad] float32 s_row (0 for
  // padding rows); codes as above, ascale unused.
  bool fp8 = false;
  unsigned* row_amax = nullptr;
  float* row_scale = nullptr;
  int amax_chunks = 0;  // set by launch_act_quant: pass 1's chunk count
  // Optional: the weight expansion of the same layer call (launch_expand_weights' work: wfrag
  // [exp_tiles][4096 bytes] -> wexp [exp_tiles][8192]), done by extra blocks of the first launch
  // where the activation kernel leaves room for them. exp_counters: 2 words, zero between calls
  // (ActWorkspace's, after the tickets).
  const uint8_t* wfrag = nullptr;
  uint8_t* wexp = nullptr;
  int64_t exp_tiles = 0;
  unsigned* exp_counters = nullptr;
};
// Returns whether it also expanded the weights (exp_tiles > 0 and room for it); if not, the caller
// launches launch_expand_weights. fp8 goes to the single-pass kernel (fp8_act.hpp) where it
// applies, else to the two passes.
bool launch_act_quant(const ActQuantParams& p, cudaStream_t stream);
// The two fp8 passes alone (p.fp8): launch_act_quant's fallback, callable directly so that tests
// cover both paths.
bool launch_act_quant_fp8_two_pass(const ActQuantParams& p, cudaStream_t stream);
// How the activation kernel splits K for Mpad (padded) rows: chunks of `groups` groups of 64, one
// grid column per chunk.
struct ActChunking {
  int groups = 0;
  int chunks = 0;
};
ActChunking act_quant_chunking(int64_t Mpad, int64_t K);
// Floats of lpart needed by every call with up to Mpad rows (0: no partial sums needed), and the
// number of ticket counters.
int64_t act_quant_lpart_floats(int64_t Mpad, int64_t K, int Rpad);
int64_t act_quant_tickets(int64_t Mpad);  // the row blocks' tickets and the 2 expansion counters
int64_t act_quant_amax_words(int64_t Mpad);  // words of row_amax for up to Mpad rows (fp8)

// How the GEMM combines the exact group sums: NUMERICS.md §4.1, §4.2, or §5 (fp8 activations:
// one-sided group scales, float32 row scales applied in the epilogue).
enum class GemmMode : uint8_t { FP32, HALF, FP8 };

// NUMERICS.md §4: the W4A4 GEMM with the per-group scaling, epilogue and low-rank up projection.
struct GemmParams {
  const uint8_t* codes = nullptr;     // activation codes (as above)
  const void* ascale = nullptr;       // [Mt][G][128]: float32 (FP32) or T (HALF); unused (FP8)
  const float* row_scale = nullptr;   // [Mpad] float32 s_row (FP8 only)
  const float* lact = nullptr;        // [Mpad, Rpad]
  const uint8_t* wfrag = nullptr;     // [Nt][G][8192 / 2] weight fragments
  // The same weights expanded to e4m3 ([Nt][G][8192], by launch_expand_weights or the activation
  // kernel's expansion rows: ActQuantParams::wexp); when set, the
  // GEMM reads them as a shared-memory A operand instead of expanding wfrag in registers (clusters
  // of 1 only). Bitwise the same output.
  const uint8_t* wexp = nullptr;
  const void* wscale = nullptr;       // [Nt][G][128]: float32 (FP32, FP8) or T (HALF)
  const float* wcscales = nullptr;    // [Npad] float32 (ones when absent)
  const float* bias = nullptr;        // [Npad] float32 (zeros when absent)
  const float* proj_up = nullptr;     // [Npad, Rpad] float32
  uint16_t* y = nullptr;              // [M, N] T
  int64_t M = 0, N = 0, K = 0;
  int Rpad = 0;
  float alpha = 1.0f;
  GemmMode mode = GemmMode::FP32;
  HalfType dtype = HalfType::BF16;
  // CTAs per cluster (1, 2 or 4; 0: chosen per call). The CTAs of a cluster take adjacent column
  // tiles of the same 128 activation rows and share each activation code tile: each reads 1 /
  // cluster of it from L2 and multicasts it to all (w4a4_gemm.cu). Bitwise the same output.
  int cluster = 0;
  // Profiling only (cuda_bench's breakdown; wrong results; bf16, FP32 or FP8 mode, clusters of 1
  // or 2): bit 0 leaves out the per-group fold, bit 1 the wgmma; 4: no loads after the first pass
  // over the stages; 8: A from shared memory (no int4 expansion); 32: no epilogue, 64: no global
  // stores, 128: no staging and stores (fp8, e4m3 weights). Variants 1, 4, 5, 8, 11 (the
  // consumers only wait for and release the stages; the epilogue still runs), 32, 43 (11 without
  // the epilogue: the delivery alone), 64 and 128 exist. 0 in every real call.
  int profile_skip = 0;
  // Split-K for small M (FP32 and FP8 modes, clusters of 1, int4 fragments; 1: off): each output
  // tile is computed by `splits` CTAs over consecutive ranges of groups; each writes its float32
  // accumulators to split_ws and the last one of the tile to finish (an integer ticket in
  // split_tickets) adds them in split order and runs the epilogue. Deterministic (no float
  // atomics); the group sums are added in another association than §4.1 / §5's single chain,
  // which both allow. The tickets must be zero before the call; the kernel leaves them zero.
  int splits = 1;
  float* split_ws = nullptr;          // gemm_split_ws_floats(M, N, splits) floats
  unsigned* split_tickets = nullptr;  // gemm_split_tiles(M, N) counters
};
void launch_w4a4_gemm(const GemmParams& p, cudaStream_t stream);
// The split count the layer uses for an M x N x K GEMM on a device with `sms` SMs (1: no split):
// the one that minimizes the rounds of the persistent CTAs per unit of work.
int gemm_splits(int64_t M, int64_t N, int64_t K, int sms);
int64_t gemm_split_tiles(int64_t M, int64_t N);                  // output tiles (tickets)
int64_t gemm_split_ws_floats(int64_t M, int64_t N, int splits);  // split_ws size

// wfrag ([Nt][G][4096], the int4 fragment order) expanded to e4m3 tiles wexp[Nt][G][8192] in the
// activation code tiles' layout (weight_expand.cu), the GEMM's GemmParams::wexp.
void launch_expand_weights(const uint8_t* wfrag, uint8_t* wexp, int64_t Nt, int64_t G, cudaStream_t stream);

}  // namespace svdquant::cuda
