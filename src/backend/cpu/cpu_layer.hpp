// The CPU backend's own layout of a layer (built once by `prepare`) and the row-level kernels of
// docs/NUMERICS.md. Shared by the CPU backend and the public reference functions.
#pragma once
#include <cstdint>
#include <vector>

#include "svdquant/checkpoint.hpp"
#include "svdquant/numerics.hpp"

namespace svdquant::detail {

struct CpuLayer {
  LayerDesc desc;
  ForwardOptions opt;
  int64_t G = 64, groups = 0;
  // Weight codes as exact integers: int4 values, or 2 * e2m1 value for nvfp4 (so every product
  // of codes is an integer). [N][K].
  std::vector<int8_t> w;
  std::vector<float> sw;        // f32(s_w), [N][groups] (transposed from the file's [groups][N])
  std::vector<float> smooth;    // [K]
  std::vector<float> down;      // [K][R]
  std::vector<float> up;        // [N][R]
  std::vector<float> bias;      // [N] (0 if absent)
  std::vector<float> wcscales;  // [N] (1 if absent)
  float alpha = 1.0f;
};

CpuLayer make_cpu_layer(const LayerWeights& w, const ForwardOptions& opt);

// One row's activations after NUMERICS.md §2-§3/§5.
struct RowActivations {
  // CHECKPOINT: stored codes (int4 value, or e2m1 code) and the exact-integer form used by the dot
  // product (int4 value, or 2 * e2m1 value). FP8: the e4m3 bytes and 512 * value (an integer).
  std::vector<int8_t> codes;
  std::vector<uint8_t> fp8;
  std::vector<int32_t> ints;
  std::vector<uint16_t> scale_bits;  // per group: T bits (int4) or e4m3 byte (nvfp4)
  std::vector<float> scales;         // per group f32(s_a); FP8: one entry, s_row
};

void shift_smooth_row(const CpuLayer& L, const uint16_t* x, float* xs);
void quantize_row(const CpuLayer& L, const float* xs, RowActivations& out);
void lowrank_row(const CpuLayer& L, const uint16_t* x, float* l);
// Outputs n in [n0, n1) of one row (NUMERICS.md §4/§5): as T bits into out_t (out = T(y + u)), or,
// when out_t is null, the float32 value y + u before that last rounding into out_f32.
void output_row(const CpuLayer& L, const RowActivations& a, const float* l, int64_t n0, int64_t n1, uint16_t* out_t,
                float* out_f32);

}  // namespace svdquant::detail
