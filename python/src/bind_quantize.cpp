// The C++ quantizer from Python: quantize_linear (one layer, as `svdquant quantize` quantizes each
// layer of a model), calibration statistics files, the family skip tables and module patterns.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "arrays.hpp"
#include "bindings.hpp"
#include "svdquant/config.hpp"
#include "svdquant/error.hpp"
#include "svdquant/quantize.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace svdquant::python {
namespace {

// The seed `svdquant quantize` gives synthetic_inputs for a module (FNV-1a of its name, as in
// src/quant/model_quantizer.cpp), so the same module quantizes to the same tensors both ways.
uint64_t module_seed(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

nb::dict quality_dict(const LayerQuality& q) {
  nb::dict d;
  d["rtn"] = q.rtn;
  d["smooth_only"] = q.smooth_only;
  d["lowrank_only"] = q.lowrank_only;
  d["svdquant"] = q.svdquant;
  d["alpha"] = q.alpha;
  d["refine_kept"] = q.refine_kept;
  nb::list grid;
  for (const auto& [a, e] : q.alpha_errors) grid.append(nb::make_tuple(a, e));
  d["alpha_errors"] = grid;
  d["refine_errors"] = q.refine_errors;
  return d;
}

nb::tuple quantize(const InArray& weight, const std::optional<InArray>& bias, const std::string& prefix, int rank,
                   const std::string& precision, const std::string& dtype, bool act_unsigned, float alpha,
                   const std::optional<InArray>& act_absmax, const std::optional<InArray>& samples, int64_t eval_rows,
                   const std::optional<std::vector<float>>& alpha_grid, int refine, bool report, const std::string& svd,
                   int power_iterations) {
  if (weight.ndim() != 2)
    throw FormatError("weight: expected a 2-D array [out_features, in_features], found " + std::to_string(weight.ndim()) + "-D");
  const int64_t N = int64_t(weight.shape(0)), K = int64_t(weight.shape(1));
  if (rank < 0) throw ConfigError("rank: " + std::to_string(rank) + " is negative");
  if (eval_rows < 1) throw ConfigError("eval_rows: must be at least 1");
  if (refine < 0) throw ConfigError("refine: " + std::to_string(refine) + " is negative");
  QuantizeOptions q;
  q.precision = parse_precision(precision, "precision");
  const DType T = parse_half_dtype(dtype, "dtype");
  q.dtype = T == DType::BF16 ? HalfKind::BF16 : HalfKind::FP16;
  q.rank = int(std::min<int64_t>(rank, std::min(N, K)));
  q.alpha = alpha;
  q.act_unsigned = act_unsigned;
  if (svd == "randomized") q.svd = QuantizeOptions::Svd::RANDOMIZED;
  else if (svd == "lapack") q.svd = QuantizeOptions::Svd::LAPACK;
  else throw ConfigError("svd: unknown value '" + svd + "' (accepted: randomized, lapack)");
  q.power_iterations = power_iterations;
  const int64_t G = group_size(q.precision);
  if (K % G != 0)
    throw UnsupportedError((prefix.empty() ? std::string("weight") : prefix) + ": K = " + std::to_string(K) +
                           " is not a multiple of the " + precision + " group size " + std::to_string(G) + "; keep it in 16 bits");

  std::vector<float> W = to_f32(weight, "weight", {N, K});
  std::vector<float> b, absmax, X;
  if (bias) b = to_f32(*bias, "bias", {N});
  if (act_absmax) absmax = to_f32(*act_absmax, "act_absmax", {K});
  int64_t M = 0;
  if (samples) {
    if (samples->ndim() != 2) throw FormatError("samples: expected [rows, " + std::to_string(K) + "]");
    M = std::min<int64_t>(int64_t(samples->shape(0)), eval_rows);
    std::vector<float> all = to_f32(*samples, "samples", {int64_t(samples->shape(0)), K});
    X.assign(all.begin(), all.begin() + M * K);
    for (float& v : X) v = round_half(q.dtype, v);
  }
  SearchOptions s;
  s.alpha_grid = alpha_grid ? *alpha_grid : ModelQuantizeOptions{}.alpha_grid;
  s.refine = refine;
  s.report = report;
  QuantizedLayer r;
  {
    nb::gil_scoped_release release;
    if (M == 0) {
      M = eval_rows;
      X = synthetic_inputs(M, K, absmax, act_unsigned, q.dtype, module_seed(prefix));
    }
    r = quantize_linear_searched(W, N, K, b, absmax, X, M, q, s);
  }
  r.weights.prefix = prefix;
  return nb::make_tuple(nb::cast(std::move(r.weights)), quality_dict(r.quality));
}

}  // namespace

void bind_quantize(nb::module_& m) {
  m.def("quantize_linear", &quantize, "weight"_a, "bias"_a = nb::none(), nb::kw_only(), "prefix"_a = "", "rank"_a = 32,
        "precision"_a = "int4", "dtype"_a = "bfloat16", "act_unsigned"_a = false, "alpha"_a = 0.5f,
        "act_absmax"_a = nb::none(), "samples"_a = nb::none(), "eval_rows"_a = 128, "alpha_grid"_a = nb::none(),
        "refine"_a = 0, "report"_a = true, "svd"_a = "randomized", "power_iterations"_a = 2,
        "SVDQuant one linear layer (docs/QUANTIZER.md): weight [N, K] and bias [N] are host float arrays "
        "(float32/float64/float16/bfloat16). Smoothing uses act_absmax [K] (calibration absmax) and searches "
        "alpha_grid (default: svdquant quantize's) judged on `samples` [S, K] (or synthetic inputs seeded by "
        "`prefix`, as svdquant quantize does); without act_absmax the data-free rule with `alpha`. Returns "
        "(Weights, quality) where quality holds the relative output errors of RTN, smoothing-only, "
        "low-rank-only and SVDQuant against the 16-bit layer.");

  nb::class_<CalibrationStats>(m, "Calibration",
                               "A calibration statistics file (<module>.input_absmax [K], optional "
                               "<module>.input_samples [S, K]; docs/QUANTIZER.md).")
      .def("__init__", [](CalibrationStats* self, const std::string& path) { new (self) CalibrationStats(CalibrationStats::open(path)); },
           "path"_a)
      .def("has", &CalibrationStats::has, "module"_a)
      .def("modules", &CalibrationStats::modules)
      .def(
          "absmax",
          [](const CalibrationStats& c, const std::string& module, int64_t K) {
            std::vector<float> v = c.absmax(module, K);
            Tensor t = Tensor::zeros(DType::F32, {int64_t(v.size())});
            std::copy(v.begin(), v.end(), t.data_as<float>());
            return to_numpy(t, true);
          },
          "module"_a, "in_features"_a)
      .def(
          "samples",
          [](const CalibrationStats& c, const std::string& module, int64_t K, int64_t max_rows) -> nb::object {
            int64_t rows = 0;
            std::vector<float> v = c.samples(module, K, max_rows, rows);
            if (rows == 0) return nb::none();
            Tensor t = Tensor::zeros(DType::F32, {rows, K});
            std::copy(v.begin(), v.end(), t.data_as<float>());
            return to_numpy(t, true);
          },
          "module"_a, "in_features"_a, "max_rows"_a, "Sampled input rows [S, K] as float32, or None.");

  m.def(
      "family_defaults",
      [](const std::string& config_json) {
        FamilyDefaults f = family_defaults(config_json);
        nb::dict d;
        d["family"] = f.family;
        d["skip"] = f.skip;
        d["skip_top_level"] = f.skip_top_level;
        d["act_unsigned"] = f.act_unsigned;
        return d;
      },
      "config_json"_a,
      "The model family of a diffusers config.json text (by _class_name) and its default 16-bit modules and "
      "act_unsigned layers (docs/QUANTIZER.md 'Which layers').");
  m.def("module_matches", &module_matches, "pattern"_a, "module"_a,
        "Module-name matching of modules_to_not_convert / act_unsigned_modules (docs/FORMAT.md §2).");
}

}  // namespace svdquant::python
