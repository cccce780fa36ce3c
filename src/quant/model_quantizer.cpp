// quantize_model (include/svdquant/quantize.hpp): `svdquant quantize`, one layer in memory at a time
// (docs/QUANTIZER.md). Input tensors are memory-mapped views; a layer's weight is widened to float32,
// quantized, and only its quantized tensors are kept.
#include <algorithm>
#include <chrono>
#include <fstream>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "svdquant/checkpoint.hpp"
#include "svdquant/config.hpp"
#include "svdquant/error.hpp"
#include "svdquant/quantize.hpp"

namespace svdquant {
namespace fs = std::filesystem;
namespace {

struct PlannedLayer {
  std::string module;
  int64_t N = 0, K = 0;
  HalfKind dtype = HalfKind::BF16;
  bool act_unsigned = false;
};

bool any_match(const std::vector<std::string>& patterns, const std::string& module) {
  return std::any_of(patterns.begin(), patterns.end(), [&](const std::string& p) { return module_matches(p, module); });
}

bool top_level_match(const std::vector<std::string>& names, const std::string& module) {
  return std::any_of(names.begin(), names.end(), [&](const std::string& p) {
    return module == p || (module.size() > p.size() && module.compare(0, p.size(), p) == 0 && module[p.size()] == '.');
  });
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

// Re-throws an svdquant error with the module name in front, keeping its type.
[[noreturn]] void rethrow_for(const std::string& module) {
  try {
    throw;
  } catch (const FormatError& e) {
    throw FormatError(module + ": " + e.what());
  } catch (const ConfigError& e) {
    throw ConfigError(module + ": " + e.what());
  } catch (const UnsupportedError& e) {
    throw UnsupportedError(module + ": " + e.what());
  } catch (const Error& e) {
    throw Error(module + ": " + e.what());
  }
}

}  // namespace

std::string ModelQuantizeReport::to_json() const {
  nlohmann::ordered_json j;
  j["family"] = family;
  j["seconds"] = seconds;
  nlohmann::ordered_json layers_json = nlohmann::ordered_json::array();
  for (const auto& l : layers) {
    nlohmann::ordered_json e;
    e["module"] = l.module;
    e["N"] = l.N;
    e["K"] = l.K;
    e["act_unsigned"] = l.act_unsigned;
    e["alpha"] = l.quality.alpha;
    e["refine_kept"] = l.quality.refine_kept;
    e["seconds"] = l.seconds;
    e["error"] = {{"rtn", l.quality.rtn},
                  {"smooth_only", l.quality.smooth_only},
                  {"lowrank_only", l.quality.lowrank_only},
                  {"svdquant", l.quality.svdquant}};
    nlohmann::ordered_json grid = nlohmann::ordered_json::array();
    for (const auto& [a, err] : l.quality.alpha_errors) grid.push_back({{"alpha", a}, {"error", err}});
    e["alpha_search"] = grid;
    e["refine_errors"] = l.quality.refine_errors;
    layers_json.push_back(e);
  }
  j["layers"] = layers_json;
  j["kept_16bit"] = kept_16bit;
  return j.dump(2);
}

ModelQuantizeReport quantize_model(const fs::path& input, const fs::path& output, const ModelQuantizeOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  if (opt.rank < 0) throw ConfigError("--rank: " + std::to_string(opt.rank) + " is negative");
  if (opt.eval_rows < 1) throw ConfigError("--eval-rows: must be at least 1");
  if (opt.refine < 0) throw ConfigError("--refine: " + std::to_string(opt.refine) + " is negative");
  std::error_code ec;
  if (fs::exists(output, ec) && !(fs::is_directory(output, ec) && fs::is_empty(output, ec)))
    throw Error(output.string() + ": output already exists; choose a new folder or remove it");

  const Checkpoint ck = Checkpoint::open(input, opt.component);
  if (ck.quant_config() || !ck.quantized_layers().empty())
    throw ConfigError(input.string() + ": already quantized (it has a quantization_config or qweight tensors); "
                      "quantize expects a 16-bit checkpoint");
  FamilyDefaults fam = family_defaults(ck.config_json());
  if (!opt.family_skips) fam.skip.clear(), fam.skip_top_level.clear();
  std::optional<CalibrationStats> calib;
  if (opt.calib) calib = CalibrationStats::open(*opt.calib);

  // Plan: which 2-D weights become quantized layers.
  ModelQuantizeReport report;
  report.family = fam.family;
  std::vector<PlannedLayer> plan;
  const std::string suffix = ".weight";
  for (const std::string& name : ck.tensor_names()) {
    if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    const std::string module = name.substr(0, name.size() - suffix.size());
    const TensorInfo& info = ck.info(name);
    const bool selected = !opt.only.empty() && any_match(opt.only, module);
    const bool expected_linear = selected || (calib && calib->has(module));
    const bool floating = info.dtype == DType::F32 || info.dtype == DType::BF16 || info.dtype == DType::F16;
    if (info.shape.size() != 2 || !floating) {
      if (expected_linear)
        throw FormatError(name + ": expected a 2-D float linear weight [N, K] (the module is " +
                          (selected ? std::string("selected by --only") : "in the calibration file") + "), found " +
                          std::string(dtype_name(info.dtype)) + " " + shape_str(info.shape));
      continue;
    }
    if (!opt.only.empty() && !selected) {
      report.kept_16bit.push_back(module);
      continue;
    }
    if (any_match(opt.modules_to_not_convert, module) || any_match(fam.skip, module) ||
        top_level_match(fam.skip_top_level, module)) {
      report.kept_16bit.push_back(module);
      continue;
    }
    PlannedLayer p;
    p.module = module;
    p.N = info.shape[0];
    p.K = info.shape[1];
    p.dtype = opt.dtype ? *opt.dtype : (info.dtype == DType::F16 ? HalfKind::FP16 : HalfKind::BF16);
    p.act_unsigned = opt.precision == Precision::INT4 && any_match(fam.act_unsigned, module);
    const int64_t G = group_size(opt.precision);
    if (p.K % G != 0)
      throw UnsupportedError(name + ": K = " + std::to_string(p.K) + " is not a multiple of the " +
                             std::string(to_string(opt.precision)) + " group size " + std::to_string(G) +
                             "; keep it in 16 bits with --modules-to-not-convert " + module);
    plan.push_back(p);
  }
  if (plan.empty()) throw ConfigError(input.string() + ": no 2-D linear weight left to quantize");
  if (calib) {  // every quantized layer needs statistics; fail before any work
    std::vector<std::string> missing;
    for (const auto& p : plan)
      if (!calib->has(p.module)) missing.push_back(p.module);
    if (!missing.empty()) {
      std::string list;
      for (size_t i = 0; i < missing.size() && i < 5; ++i) list += (i ? ", " : "") + missing[i];
      if (missing.size() > 5) list += ", ... (" + std::to_string(missing.size()) + " in all)";
      throw ConfigError(calib->path().string() + ": no calibration statistics (<module>.input_absmax) for " + list +
                        "; record them for every quantized layer or exclude the layers with --modules-to-not-convert");
    }
  }

  // Quantize, one layer at a time.
  std::set<std::string> replaced;
  int64_t total_weights = 0, done_weights = 0;
  for (const auto& p : plan) {
    total_weights += p.N * p.K;
    replaced.insert(p.module + ".weight");
    replaced.insert(p.module + ".bias");
  }
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const std::string& name : ck.tensor_names())
    if (!replaced.count(name)) tensors.emplace_back(name, ck.tensor(name));
  QuantConfig qc;
  qc.rank = opt.rank;
  qc.precision = opt.precision;
  for (size_t i = 0; i < plan.size(); ++i) {
    const PlannedLayer& p = plan[i];
    const auto tl = std::chrono::steady_clock::now();
    try {
      const std::vector<float> W = to_f32_vector(ck.tensor(p.module + ".weight"));
      std::vector<float> bias;
      if (ck.has_tensor(p.module + ".bias")) {
        const Tensor b = ck.tensor(p.module + ".bias");
        if (b.dim() != 1 || b.size(0) != p.N)
          throw FormatError(p.module + ".bias: shape " + shape_str(b.shape()) + ", expected [" + std::to_string(p.N) + "]");
        bias = to_f32_vector(b);
      }
      std::vector<float> absmax, X;
      int64_t M = 0;
      if (calib) {
        absmax = calib->absmax(p.module, p.K);
        X = calib->samples(p.module, p.K, opt.eval_rows, M);
        for (float& x : X) x = round_half(p.dtype, x);
      }
      if (M == 0) {
        M = opt.eval_rows;
        X = synthetic_inputs(M, p.K, absmax, p.act_unsigned, p.dtype, fnv1a(p.module));
      }
      QuantizeOptions q;
      q.precision = opt.precision;
      q.dtype = p.dtype;
      q.rank = int(std::min<int64_t>(opt.rank, std::min(p.N, p.K)));
      q.act_unsigned = p.act_unsigned;
      SearchOptions s;
      s.alpha_grid = opt.alpha_grid;
      s.refine = opt.refine;
      s.report = opt.report;
      QuantizedLayer r = quantize_linear_searched(W, p.N, p.K, bias, absmax, X, M, q, s);
      r.weights.prefix = p.module;
      for (auto& t : layer_tensors(r.weights)) tensors.push_back(std::move(t));
      LayerReport lr;
      lr.module = p.module;
      lr.N = p.N;
      lr.K = p.K;
      lr.act_unsigned = p.act_unsigned;
      lr.quality = std::move(r.quality);
      lr.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - tl).count();
      report.layers.push_back(std::move(lr));
      if (p.act_unsigned) qc.act_unsigned_modules.push_back(p.module);
    } catch (const Error&) {
      rethrow_for(p.module);
    }
    done_weights += p.N * p.K;
    if (opt.progress) opt.progress(i + 1, plan.size(), done_weights, total_weights, p.module);
  }

  // modules_to_not_convert: the exact names of the 16-bit linears, except a name that would also
  // match a quantized layer under module_matches (e.g. FLUX's top-level proj_out vs
  // single_transformer_blocks.N.proj_out); those are recognised by the absence of qweight.
  for (const auto& m : report.kept_16bit) {
    const bool overmatches = std::any_of(plan.begin(), plan.end(), [&](const PlannedLayer& p) { return module_matches(m, p.module); });
    if (!overmatches) qc.modules_to_not_convert.push_back(m);
  }
  write_checkpoint_folder(output, ck.config_json().empty() ? "{}" : ck.config_json(), qc, tensors);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const fs::path rp = output / "quantization_report.json", tmp = output / ".quantization_report.json.tmp";
  {
    std::ofstream out(tmp);
    out << report.to_json() << "\n";
    if (!out) throw Error(tmp.string() + ": cannot write the quality report");
  }
  fs::rename(tmp, rp);
  return report;
}

}  // namespace svdquant
