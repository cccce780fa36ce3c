// The knobs of docs/NUMERICS.md: weight precision, accumulation across groups, activation mode.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace svdquant {

enum class Precision : uint8_t { INT4, NVFP4 };
// How per-group partial sums are combined (NUMERICS.md §4): FP32 (the accurate reference) or HALF
// (nunchaku-compatible: one T-rounded fma per group, in group order).
enum class Accumulate : uint8_t { FP32, HALF };
// CHECKPOINT: 4-bit activations as the checkpoint's precision says (NUMERICS.md §3).
// FP8: e4m3 activations with one fp32 scale per row, weights unchanged (NUMERICS.md §5).
// AUTO: the selected backend's default (Backend::resolve): FP8 for int4 layers with fp32
// accumulation on cuda-sm90 (faster there and more accurate), CHECKPOINT everywhere else.
enum class Activations : uint8_t { CHECKPOINT, FP8, AUTO };

// Shift added to GELU outputs before unsigned int4 quantization (NUMERICS.md §2).
inline constexpr float kGeluShift = 0.171875f;

inline constexpr int64_t group_size(Precision p) { return p == Precision::INT4 ? 64 : 16; }

struct ForwardOptions {
  Accumulate accumulate = Accumulate::FP32;
  Activations activations = Activations::AUTO;
};

// `opt` with Activations::AUTO replaced by `default_mode`.
inline ForwardOptions resolve_activations(ForwardOptions opt, Activations default_mode) {
  if (opt.activations == Activations::AUTO) opt.activations = default_mode;
  return opt;
}

std::string_view to_string(Precision p);      // "int4" | "nvfp4"
std::string_view to_string(Accumulate a);     // "fp32" | "half"
std::string_view to_string(Activations a);    // "checkpoint" | "fp8" | "auto"
// Parse the spellings above; throw ConfigError naming `what` and the accepted values.
Precision parse_precision(std::string_view s, std::string_view what = "precision");
Accumulate parse_accumulate(std::string_view s, std::string_view what = "accumulate");
Activations parse_activations(std::string_view s, std::string_view what = "activations");

}  // namespace svdquant
