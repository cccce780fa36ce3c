#include "svdquant/numerics.hpp"

#include <string>

#include "svdquant/error.hpp"

namespace svdquant {

std::string_view to_string(Precision p) { return p == Precision::INT4 ? "int4" : "nvfp4"; }
std::string_view to_string(Accumulate a) { return a == Accumulate::FP32 ? "fp32" : "half"; }
std::string_view to_string(Activations a) {
  return a == Activations::CHECKPOINT ? "checkpoint" : a == Activations::FP8 ? "fp8" : "auto";
}

namespace {
[[noreturn]] void bad_value(std::string_view what, std::string_view got, std::string_view accepted) {
  throw ConfigError(std::string(what) + ": unknown value '" + std::string(got) + "' (accepted: " +
                    std::string(accepted) + ")");
}
}  // namespace

Precision parse_precision(std::string_view s, std::string_view what) {
  if (s == "int4") return Precision::INT4;
  if (s == "nvfp4" || s == "fp4") return Precision::NVFP4;
  bad_value(what, s, "int4, nvfp4");
}
Accumulate parse_accumulate(std::string_view s, std::string_view what) {
  if (s == "fp32") return Accumulate::FP32;
  if (s == "half") return Accumulate::HALF;
  bad_value(what, s, "fp32, half");
}
Activations parse_activations(std::string_view s, std::string_view what) {
  if (s == "checkpoint") return Activations::CHECKPOINT;
  if (s == "fp8") return Activations::FP8;
  if (s == "auto") return Activations::AUTO;
  bad_value(what, s, "auto, checkpoint, fp8");
}

}  // namespace svdquant
