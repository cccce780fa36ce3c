// The CPU reference of docs/NUMERICS.md, step by step. The CPU backend is built from these
// functions; GPU tests compare against them. All functions take host tensors and are
// deterministic (the result does not depend on the number of threads).
#pragma once
#include <cstdint>
#include <vector>

#include "svdquant/checkpoint.hpp"
#include "svdquant/numerics.hpp"
#include "svdquant/tensor.hpp"

namespace svdquant::ref {

struct QuantizedActivations {
  Activations mode = Activations::CHECKPOINT;
  Precision precision = Precision::INT4;
  int64_t M = 0, K = 0;
  // CHECKPOINT: int8 codes [M, K] (int4 values, unsigned int4 in [0, 15], or e2m1 codes) and
  // scales [M, K/G]: T (int4) or F8_E4M3 (nvfp4).
  // FP8: F8_E4M3 codes [M, K] and F32 scales [M] (one per row).
  Tensor codes;
  Tensor scales;
};

// NUMERICS.md §2: x' = T(x + shift) if act_unsigned; xs = T(f32(x') / f32(smooth)). Returns xs as
// float (every value exactly representable in T). x: [M, K] T.
std::vector<float> shift_and_smooth(const Tensor& x, const LayerWeights& w);

// NUMERICS.md §3 (4-bit) and §5 (fp8): quantize the activations of x: [M, K] T.
QuantizedActivations quantize_activations(const Tensor& x, const LayerWeights& w, Activations mode);

// NUMERICS.md §4.3: lora_act[m, r] = sum_k f32(x[m, k]) * f32(proj_down[k, r]) in fp32, k ascending.
std::vector<float> lowrank_down(const Tensor& x, const LayerWeights& w);

// The whole layer: y [M, N] T. Multi-threaded over output rows; bitwise deterministic.
Tensor forward(const Tensor& x, const LayerWeights& w, const ForwardOptions& opt, int threads = 0);
// The same, stopping before the final rounding to T: F32 [M, N] holding y + u of NUMERICS.md §4.3.
Tensor forward_f32(const Tensor& x, const LayerWeights& w, const ForwardOptions& opt, int threads = 0);

// The T_fma of NUMERICS.md §4.2: T(a*b + c) with a single rounding, for a, b, c values of T.
float half_fma(HalfKind t, float a, float b, float c);

}  // namespace svdquant::ref
