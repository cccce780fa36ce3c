// Canonical checkpoint -> nunchaku single-file checkpoint (docs/FORMAT.md "Nunchaku interop").
// Each quantized layer is loaded (validated) and packed into nunchaku's fragment layouts with
// nunchaku's padding; every other tensor is carried over unchanged. The file metadata holds what
// nunchaku's loaders read: `config`, `quantization_config`, `model_class`.
#include <algorithm>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "layer_keys.hpp"
#include "nunchaku_metadata.hpp"
#include "nunchaku_models.hpp"
#include "parallel_layers.hpp"
#include "progress.hpp"
#include "svdquant/checkpoint.hpp"
#include "svdquant/error.hpp"
#include "svdquant/layout_nunchaku.hpp"
#include "svdquant/nunchaku_convert.hpp"
#include "svdquant/safetensors.hpp"

namespace svdquant {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace convert;

namespace {

// The nunchaku spelling of a canonical suffix in the given style.
std::string nunchaku_name(const std::string& canon, KeyStyle style) {
  if (style == KeyStyle::LORA) {
    if (canon == "smooth_factor") return "smooth";
    if (canon == "smooth_factor_orig") return "smooth_orig";
    if (canon == "proj_down") return "lora_down";
    if (canon == "proj_up") return "lora_up";
  }
  return canon;
}

}  // namespace

ConvertReport convert_canonical_to_nunchaku(const fs::path& input, const fs::path& file, const ConvertOptions& opt) {
  ConvertReport rep;
  auto warn = [&](const std::string& w) {
    rep.warnings.push_back(w);
    if (opt.warn)
      opt.warn(w);
    else
      std::fprintf(stderr, "warning: %s\n", w.c_str());
  };
  const Checkpoint ck = Checkpoint::open(input);
  const std::string src = input.string();
  if (!ck.quant_config()) throw ConfigError(src + ": no quantization_config (not a quantized canonical checkpoint)");
  const QuantConfig& quant = *ck.quant_config();

  json config = json::object();
  if (!ck.config_json().empty()) {
    try {
      config = json::parse(ck.config_json());
    } catch (const json::parse_error& e) {
      throw ConfigError(src + ": config.json is not valid JSON (" + e.what() + ")");
    }
  }
  json nun = config.contains("_nunchaku") && config["_nunchaku"].is_object() ? config["_nunchaku"] : json::object();
  config.erase("_nunchaku");
  config.erase("quantization_config");

  // ---- model class and key spelling
  std::string model_class = opt.model_class;
  if (model_class.empty() && nun.contains("model_class") && nun["model_class"].is_string()) model_class = nun["model_class"];
  if (model_class.empty() && config.contains("_class_name") && config["_class_name"].is_string())
    model_class = model_class_for_diffusers(config["_class_name"]);
  if (model_class.empty())
    throw ConfigError(src + ": cannot tell which nunchaku model class this checkpoint is (no _nunchaku.model_class and no known "
                      "_class_name in config.json); pass --model-class, e.g. NunchakuFluxTransformer2dModel");
  const Family family = family_of(model_class);
  KeyStyle style = default_key_style(family);
  if (nun.contains("key_style") && nun["key_style"].is_string()) style = nun["key_style"] == "lora" ? KeyStyle::LORA : KeyStyle::PROJ;

  // ---- which tensors belong to which quantized layer
  std::vector<std::string> layers;
  for (const auto& p : ck.quantized_layers())
    if (!ck.has_tensor(p + ".wzeros")) layers.push_back(p);  // AWQ W4A16 layers are carried over unchanged
  if (layers.empty()) throw FormatError(src + ": no quantized layer to convert");
  std::set<std::string> layer_set(layers.begin(), layers.end()), owned;
  for (const auto& n : ck.tensor_names()) {
    auto [prefix, last] = split_last(n);
    if (!layer_set.count(prefix)) continue;
    if (canonical_suffix(last).empty())
      throw FormatError(src + ": unexpected tensor " + n + " in quantized layer " + prefix);
    owned.insert(n);
  }

  // Each layer is an independent job (a few threads); results are collected in layer order.
  struct Result {
    std::vector<std::pair<std::string, Tensor>> tensors;
    std::vector<std::string> warnings;
    uint64_t input_bytes = 0;
    int64_t R = 0;
    bool act_unsigned = false;
  };
  std::vector<Result> results(layers.size());
  {
    Progress bar("convert", layers.size(), opt.progress);
    for_each_layer(layers.size(), [&](size_t li) {
      const std::string& p = layers[li];
      Result& res = results[li];
      const LayerWeights w = ck.layer(p);
      const LayerDesc& d = w.desc;
      const LayerFacts lf = layer_facts(family, config, p, d.precision);
      if (lf.act != Signedness::UNKNOWN && (lf.act == Signedness::UNSIGNED) != d.act_unsigned)
        throw UnsupportedError("layer " + p + ": the checkpoint says act_unsigned = " + (d.act_unsigned ? "true" : "false") + " but " +
                               model_class + " runs this layer with " + (d.act_unsigned ? "signed" : "unsigned") +
                               " activations in nunchaku");
      if (lf.act == Signedness::UNKNOWN && d.act_unsigned)
        res.warnings.push_back("layer " + p + " takes unsigned activations; make sure nunchaku's " + model_class + " shifts its input");
      const int64_t Np = nunchaku::padded_n(d.N), Kp = nunchaku::padded_k(d.K);
      auto name = [&](const std::string& canon) { return p + "." + nunchaku_name(canon, style); };
      auto emit = [&](const std::string& canon, Tensor t) { res.tensors.emplace_back(name(canon), std::move(t)); };
      emit("qweight", nunchaku::pack_qweight(w.qweight, Np, Kp, name("qweight")));
      emit("wscales", d.precision == Precision::INT4
                          ? nunchaku::pack_wscales_int4(w.wscales, Np, nunchaku::padded_scale_rows(d.precision, d.K), name("wscales"))
                          : nunchaku::pack_wscales_nvfp4(w.wscales, Np, 16 * nunchaku::padded_scale_rows(d.precision, d.K),
                                                         name("wscales")));
      // nunchaku always stores a bias (zeros when the layer has none).
      const DType T = w.proj_up.dtype();
      emit("bias", nunchaku::pack_vector(w.bias.data() ? w.bias : Tensor::zeros(T, {d.N}), Np, name("bias")));
      if (w.wcscales.data()) emit("wcscales", nunchaku::pack_vector(w.wcscales, Np, name("wcscales")));
      if (w.wtscale.data()) {
        if (d.precision == Precision::NVFP4) {
          emit("wtscale", w.wtscale.clone());
        } else if (w.alpha() != 1.0f) {
          throw UnsupportedError(p + ".wtscale = " + std::to_string(w.alpha()) + ": nunchaku's int4 layers have no per-tensor scale");
        }
      }
      emit("smooth_factor", nunchaku::pack_vector(w.smooth, Kp, name("smooth_factor")));
      // smooth_orig is unused at run time; nunchaku's converter stores the unfused smoothing there.
      const std::string orig = p + ".smooth_factor_orig";
      emit("smooth_factor_orig", nunchaku::pack_vector(ck.has_tensor(orig) ? ck.tensor(orig) : w.smooth, Kp, name("smooth_factor_orig")));
      emit("proj_down", nunchaku::pack_lora_down(w.proj_down, Kp, name("proj_down")));
      emit("proj_up", nunchaku::pack_lora_up(w.proj_up, Np, name("proj_up")));
      for (const auto& [n, t] : layer_tensors(w)) res.input_bytes += t.nbytes();
      res.act_unsigned = d.act_unsigned;
      res.R = d.R;
      bar.step(p);
    });
  }
  std::vector<std::pair<std::string, Tensor>> out;
  int max_rank = 0;
  for (size_t li = 0; li < layers.size(); ++li) {
    Result& res = results[li];
    for (const auto& w : res.warnings) warn(w);
    for (auto& [n, t] : res.tensors) {
      rep.output_bytes += t.nbytes();
      out.emplace_back(n, std::move(t));
    }
    rep.input_bytes += res.input_bytes;
    if (res.act_unsigned) rep.act_unsigned_layers.push_back(layers[li]);
    max_rank = std::max(max_rank, int(res.R));
    rep.quantized_layers.push_back(layers[li]);
  }
  for (const auto& n : ck.tensor_names()) {
    if (owned.count(n)) continue;
    Tensor t = ck.tensor(n);
    rep.input_bytes += t.nbytes();
    rep.output_bytes += t.nbytes();
    rep.carried_tensors.push_back(n);
    out.emplace_back(n, t);
  }

  // ---- metadata
  std::map<std::string, std::string> md;
  if (nun.contains("metadata") && nun["metadata"].is_object())
    for (auto it = nun["metadata"].begin(); it != nun["metadata"].end(); ++it)
      if (it.value().is_string()) md[it.key()] = it.value().get<std::string>();
  md["model_class"] = model_class;
  md["config"] = config.dump();
  // Keep the original quantization_config when it still describes the weights.
  bool keep = false;
  if (md.count("quantization_config")) {
    try {
      keep = parse_nunchaku_precision(md["quantization_config"], "quantization_config") == quant.precision;
      const json q = json::parse(md["quantization_config"]);
      // nunchaku's Python loaders read the rank from here, defaulting to 32 when it is absent.
      const int recorded = q.contains("rank") && q["rank"].is_number_integer() ? q["rank"].get<int>() : (q.contains("rank") ? -1 : 32);
      if (recorded != max_rank) keep = false;
    } catch (const Error&) {
      keep = false;
    }
  }
  if (!keep) md["quantization_config"] = make_nunchaku_quantization_config(quant.precision, max_rank);
  write_safetensors(file, out, md);
  return rep;
}

}  // namespace svdquant
