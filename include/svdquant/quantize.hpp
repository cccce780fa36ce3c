// The offline quantizer (SVDQuant: smoothing + rank-r SVD + 4-bit residual), from a 16-bit weight.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "svdquant/checkpoint.hpp"
#include "svdquant/numerics.hpp"
#include "svdquant/safetensors.hpp"

namespace svdquant {

struct QuantizeOptions {
  Precision precision = Precision::INT4;
  HalfKind dtype = HalfKind::BF16;  // T of the stored tensors
  int rank = 32;
  // Smoothing exponent: lambda_k = span_x,k^alpha / span_w,k^(1-alpha); alpha = 0 disables.
  float alpha = 0.5f;
  bool act_unsigned = false;  // the layer consumes GELU outputs (int4 only)
  // Rank-r SVD of the smoothed weight (docs/QUANTIZER.md "Low-rank branch"): a randomized SVD with
  // `power_iterations` re-orthonormalized power iterations (default), or LAPACK's full sgesdd.
  enum class Svd : uint8_t { RANDOMIZED, LAPACK } svd = Svd::RANDOMIZED;
  int power_iterations = 2;
};

// W: [N, K] float32 row-major; bias: [N] or empty; act_absmax: per-input-channel absmax [K] of the
// calibration inputs (empty: data-free rule). Returns a validated canonical layer (owning tensors).
LayerWeights quantize_linear(const std::vector<float>& W, int64_t N, int64_t K,
                             const std::vector<float>& bias, const std::vector<float>& act_absmax,
                             const QuantizeOptions& opt);

// ---- search, refinement and quality report (docs/QUANTIZER.md) ----

// Relative output errors ||Y - Y16||_F / ||Y16||_F of four quantizations of one layer against the
// 16-bit layer, on the evaluation inputs: plain W4A4 RTN (no smoothing, no low-rank branch),
// smoothing only, low-rank only, and SVDQuant (the layer that is kept).
struct LayerQuality {
  double rtn = 0, smooth_only = 0, lowrank_only = 0, svdquant = 0;
  float alpha = 0;        // the smoothing exponent kept
  int refine_kept = 0;    // refinement steps of the kept low-rank branch (0 = plain SVD)
  std::vector<std::pair<float, double>> alpha_errors;  // (alpha, SVDQuant error) per grid point
  std::vector<double> refine_errors;                   // error after refinement step i (0 = plain SVD)
};

struct SearchOptions {
  // Smoothing exponents tried when act_absmax is given; 0 ("no smoothing") is always tried.
  // Empty: only QuantizeOptions::alpha.
  std::vector<float> alpha_grid;
  int refine = 0;           // refinement steps L <- SVD_r(W^ - Q(W^ - L)); the best is kept
  bool report = true;       // compute the RTN / smoothing-only / low-rank-only baselines
};

struct QuantizedLayer {
  LayerWeights weights;
  LayerQuality quality;
};

// quantize_linear with the alpha grid search and refinement judged by the output error on
// X [M, K] (values of T; calibration samples, or synthetic inputs: see synthetic_inputs).
QuantizedLayer quantize_linear_searched(const std::vector<float>& W, int64_t N, int64_t K,
                                        const std::vector<float>& bias, const std::vector<float>& act_absmax,
                                        const std::vector<float>& X, int64_t M, const QuantizeOptions& opt,
                                        const SearchOptions& search);

// Evaluation inputs when no calibration samples exist: M rows, N(0, 1) per channel scaled by
// act_absmax[k] / 4 when given, otherwise N(0, 1) with 1% of the channels (at least one) scaled by
// 20 (outlier channels); GELU applied when act_unsigned. Deterministic in `seed`. Values of T.
std::vector<float> synthetic_inputs(int64_t M, int64_t K, const std::vector<float>& act_absmax, bool act_unsigned,
                                    HalfKind dtype, uint64_t seed);

// ---- calibration statistics (docs/QUANTIZER.md "Calibration statistics") ----
// A safetensors file with, per linear module `<m>`: `<m>.input_absmax` F32 [K] (per-input-channel
// absmax of the inputs seen) and optionally `<m>.input_samples` [S, K] (F32/BF16/F16, sampled rows).
class CalibrationStats {
 public:
  static CalibrationStats open(const std::filesystem::path& path);
  const std::filesystem::path& path() const { return file_.path(); }
  bool has(const std::string& module) const;
  // Throws ConfigError naming the file and module when absent, FormatError when the shape is not [K].
  std::vector<float> absmax(const std::string& module, int64_t K) const;
  // Sampled input rows [S, K] (at most max_rows), empty when the file has none for this module.
  std::vector<float> samples(const std::string& module, int64_t K, int64_t max_rows, int64_t& rows) const;
  std::vector<std::string> modules() const;

 private:
  SafetensorsFile file_;
};

// ---- whole-model quantization (`svdquant quantize`) ----

// Known model families and their default 16-bit modules (docs/QUANTIZER.md "Which layers").
struct FamilyDefaults {
  std::string family;                      // "flux", "sd3", "qwen-image", "z-image", "" (unknown)
  std::vector<std::string> skip;           // module patterns kept in 16 bits (module_matches)
  std::vector<std::string> skip_top_level; // top-level modules kept in 16 bits (exact name)
  std::vector<std::string> act_unsigned;   // patterns of layers consuming GELU outputs
};
// From the diffusers config.json `_class_name` (empty config: unknown family).
FamilyDefaults family_defaults(const std::string& config_json);

struct ModelQuantizeOptions {
  Precision precision = Precision::INT4;
  int rank = 32;
  std::optional<HalfKind> dtype;  // T; default: the weights' dtype (bf16 for float32 weights)
  std::string component = "transformer";
  std::optional<std::filesystem::path> calib;        // calibration statistics
  std::vector<std::string> modules_to_not_convert;   // in addition to the family defaults
  std::vector<std::string> only;                     // if not empty: quantize only matching modules
  bool family_skips = true;
  std::vector<float> alpha_grid = {0.25f, 0.4f, 0.5f, 0.6f, 0.75f};  // with calibration statistics
  int refine = 0;
  int eval_rows = 128;  // evaluation rows per layer (calibration samples or synthetic_inputs)
  bool report = true;   // RTN / smoothing-only / low-rank-only baselines
  // Called after each layer: (layers done, layers total, weights done, weights total, module).
  std::function<void(size_t, size_t, int64_t, int64_t, const std::string&)> progress;
};

struct LayerReport {
  std::string module;
  int64_t N = 0, K = 0;
  bool act_unsigned = false;
  double seconds = 0;
  LayerQuality quality;
};

struct ModelQuantizeReport {
  std::string family;
  std::vector<LayerReport> layers;
  std::vector<std::string> kept_16bit;  // 2-D linear weights left in 16 bits
  double seconds = 0;
  std::string to_json() const;
};

// Reads a 16-bit checkpoint (diffusers folder or .safetensors), quantizes one linear layer at a
// time and writes a canonical folder with write_checkpoint_folder. Non-quantized tensors are copied
// unchanged. Throws FormatError/ConfigError/UnsupportedError naming the module; nothing is written
// at `output` on error.
ModelQuantizeReport quantize_model(const std::filesystem::path& input, const std::filesystem::path& output,
                                   const ModelQuantizeOptions& opt);

}  // namespace svdquant
