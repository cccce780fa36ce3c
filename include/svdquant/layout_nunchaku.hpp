// Nunchaku's on-disk layouts (docs/FORMAT.md "Nunchaku interop"): every tensor of a nunchaku W4A4
// layer is stored in the MMA fragment order of nunchaku's kernels and padded. These functions
// convert single tensors between that layout and the canonical row-major one, bit for bit.
//
// Padding. Nunchaku pads N to a multiple of 128 and K to a multiple of 128 (weights), the int4
// group-scale rows to an even count (so to Kp / 64 as well) and the nvfp4 micro-scale rows to a
// multiple of 4 (so K to a multiple of 64 only: Ks may be smaller than Kp). Padded weights
// (qweight codes, lora_down/lora_up rows) are zero; padded scales and 1-D vectors (wscales, bias,
// smooth, smooth_orig, wcscales) are one. Packing writes exactly these fills. Unpacking reads the
// padded sizes from the tensor it is given, never from a rule, and drops the padding.
//
// Every function takes and returns contiguous host tensors; a wrong dtype or shape throws
// FormatError naming `what` (the tensor's name in the caller's file).
#pragma once
#include <cstdint>
#include <string>

#include "svdquant/numerics.hpp"
#include "svdquant/tensor.hpp"

namespace svdquant::nunchaku {

inline constexpr int64_t kPadN = 128;  // output channels (qweight rows, scales, bias, lora_up rows)
inline constexpr int64_t kPadK = 128;  // input channels of qweight, smooth, lora_down rows
inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Padded sizes nunchaku's converter produces for a layer with true sizes N, K.
inline int64_t padded_n(int64_t N) { return round_up(N, kPadN); }
inline int64_t padded_k(int64_t K) { return round_up(K, kPadK); }
// Rows of the packed wscales: int4 Kp / 64; nvfp4 round_up(K, 64) / 16.
int64_t padded_scale_rows(Precision p, int64_t K);

// ---- qweight (int4 and e2m1 codes share one permutation) ----
// canonical [N, K/2] int8 (two codes per byte, low nibble = even k) -> nunchaku [Np, Kp/2] int8.
// Requires Np >= N, Kp >= K, Np % 128 == 0, Kp % 128 == 0, K % 16 == 0.
Tensor pack_qweight(const Tensor& canonical, int64_t Np, int64_t Kp, const std::string& what = "qweight");
// nunchaku [Np, Kp/2] -> canonical [N, K/2] with N <= Np, K <= Kp.
Tensor unpack_qweight(const Tensor& packed, int64_t N, int64_t K, const std::string& what = "qweight");

// ---- int4 group scales: canonical [K/64, N] T -> nunchaku [Gp, Np] T ----
Tensor pack_wscales_int4(const Tensor& canonical, int64_t Np, int64_t Gp, const std::string& what = "wscales");
Tensor unpack_wscales_int4(const Tensor& packed, int64_t N, int64_t G, const std::string& what = "wscales");

// ---- nvfp4 micro-scales: canonical [K/16, N] F8_E4M3 -> nunchaku [Ks/16, Np] F8_E4M3 ----
// Ks (= 16 x rows) must be a multiple of 64.
Tensor pack_wscales_nvfp4(const Tensor& canonical, int64_t Np, int64_t Ks, const std::string& what = "wscales");
Tensor unpack_wscales_nvfp4(const Tensor& packed, int64_t N, int64_t G, const std::string& what = "wscales");

// ---- 1-D vectors bias / smooth / smooth_orig / wcscales: canonical [N] T -> nunchaku [Np] T ----
// (the int4 wscales rule with one group; padding is 1)
Tensor pack_vector(const Tensor& canonical, int64_t Np, const std::string& what);
Tensor unpack_vector(const Tensor& packed, int64_t N, const std::string& what);

// ---- low-rank branch, 16x16 fragment tiles; R must be a multiple of 16 ----
// lora_down: canonical proj_down [K, R] T -> nunchaku [Kp, R] T (padding rows 0).
Tensor pack_lora_down(const Tensor& canonical, int64_t Kp, const std::string& what = "lora_down");
Tensor unpack_lora_down(const Tensor& packed, int64_t K, const std::string& what = "lora_down");
// lora_up: canonical proj_up [N, R] T -> nunchaku [Np, R] T (padding rows 0).
Tensor pack_lora_up(const Tensor& canonical, int64_t Np, const std::string& what = "lora_up");
Tensor unpack_lora_up(const Tensor& packed, int64_t N, const std::string& what = "lora_up");

}  // namespace svdquant::nunchaku
