// nunchaku single-file checkpoint -> canonical folder (docs/FORMAT.md "Nunchaku interop").
//
// The input is memory-mapped and read one layer at a time; unquantized tensors are passed through
// as views of the mapping. Padding is removed only where the model config gives a layer's true
// sizes AND re-packing the unpadded tensors reproduces the input bytes exactly (so the padding
// held exactly nunchaku's fills); otherwise the padded sizes are kept, with a warning. Either way
// the inverse conversion reproduces every tensor byte for byte.
#include <algorithm>
#include <cstdio>
#include <cstring>
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
#include "svdquant/layout_canonical.hpp"
#include "svdquant/layout_nunchaku.hpp"
#include "svdquant/nunchaku_convert.hpp"
#include "svdquant/safetensors.hpp"

namespace svdquant {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace convert;

namespace {

std::string desc(const Tensor& t) { return std::string(dtype_name(t.dtype())) + " " + shape_str(t.shape()); }

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && a.nbytes() == b.nbytes() &&
         std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

// The tensors of one nunchaku W4A4 layer, by canonical suffix, with the names they had in the file.
struct SourceLayer {
  std::string prefix;
  std::map<std::string, std::string> names;  // canonical suffix -> full tensor name in the file
  std::map<std::string, Tensor> t;           // canonical suffix -> tensor (views of the mapping)
  bool has(const std::string& s) const { return t.count(s) != 0; }
  const Tensor& get(const std::string& s) const { return t.at(s); }
  const std::string& name(const std::string& s) const { return names.at(s); }
};

void expect(const SourceLayer& L, const std::string& s, DType dtype, const Shape& shape) {
  const Tensor& t = L.get(s);
  if (t.dtype() != dtype || t.shape() != shape)
    throw FormatError(L.name(s) + ": expected " + std::string(dtype_name(dtype)) + " " + shape_str(shape) + ", found " + desc(t));
}

// Shapes and dtypes of a nunchaku layer, before any unpacking. Returns T.
DType check_source_layer(const SourceLayer& L, Precision precision) {
  for (const char* req : {"qweight", "wscales", "smooth_factor", "proj_down", "proj_up"})
    if (!L.has(req)) {
      const auto& spellings = layer_suffixes().at(req);
      std::string alts;
      for (const auto& s : spellings) alts += (alts.empty() ? "" : " or ") + L.prefix + "." + s;
      throw FormatError("layer " + L.prefix + ": missing tensor " + alts);
    }
  const Tensor& q = L.get("qweight");
  if (q.dim() != 2 || (q.dtype() != DType::I8 && q.dtype() != DType::U8) || q.size(0) % nunchaku::kPadN != 0 ||
      (q.size(1) * 2) % nunchaku::kPadK != 0 || q.size(0) == 0 || q.size(1) == 0)
    throw FormatError(L.name("qweight") + ": expected I8 [Np, Kp/2] with Np and Kp positive multiples of 128, found " + desc(q));
  const int64_t Np = q.size(0), Kp = q.size(1) * 2;
  const Tensor& sm = L.get("smooth_factor");
  if (sm.dtype() != DType::BF16 && sm.dtype() != DType::F16)
    throw FormatError(L.name("smooth_factor") + ": expected BF16 or F16, found " + desc(sm));
  const DType T = sm.dtype();
  expect(L, "smooth_factor", T, {Kp});
  if (L.has("smooth_factor_orig")) expect(L, "smooth_factor_orig", T, {Kp});
  const Tensor& ws = L.get("wscales");
  if (precision == Precision::INT4) {
    if (ws.dtype() == DType::F8_E4M3)
      throw FormatError(L.name("wscales") + ": F8_E4M3 micro-scales, but the file's quantization_config says int4");
    expect(L, "wscales", T, {Kp / 64, Np});
  } else {
    if (ws.dtype() != DType::F8_E4M3)
      throw FormatError(L.name("wscales") + ": expected F8_E4M3 micro-scales for nvfp4, found " + desc(ws));
    if (ws.dim() != 2 || ws.size(1) != Np || ws.size(0) % 4 != 0 || ws.size(0) == 0 || nunchaku::padded_k(ws.size(0) * 16) != Kp)
      throw FormatError(L.name("wscales") + ": expected F8_E4M3 [Ks/16, " + std::to_string(Np) + "] with Ks a multiple of 64 and " +
                        std::to_string(Kp - nunchaku::kPadK) + " < Ks <= " + std::to_string(Kp) + ", found " + desc(ws));
  }
  const Tensor &down = L.get("proj_down"), &up = L.get("proj_up");
  if (down.dim() == 2 && up.dim() == 2 && down.size(1) != up.size(1))
    throw FormatError("layer " + L.prefix + ": rank mismatch: " + L.name("proj_down") + " " + shape_str(down.shape()) + " has rank " +
                      std::to_string(down.size(1)) + ", " + L.name("proj_up") + " " + shape_str(up.shape()) + " has rank " +
                      std::to_string(up.size(1)));
  if (up.dim() != 2) throw FormatError(L.name("proj_up") + ": expected " + std::string(dtype_name(T)) + " [Np, R], found " + desc(up));
  const int64_t R = up.size(1);
  if (R % 16 != 0) throw FormatError(L.name("proj_up") + ": rank " + std::to_string(R) + " is not a multiple of 16");
  expect(L, "proj_down", T, {Kp, R});
  expect(L, "proj_up", T, {Np, R});
  if (L.has("bias")) expect(L, "bias", T, {Np});
  if (L.has("wcscales")) expect(L, "wcscales", T, {Np});
  if (L.has("wtscale")) {
    const Tensor& w = L.get("wtscale");
    if (w.numel() != 1 || !(w.dtype() == T || w.dtype() == DType::F32))
      throw FormatError(L.name("wtscale") + ": expected one " + std::string(dtype_name(T)) + " or F32 value, found " + desc(w));
  }
  return T;
}

// Canonical tensors of a layer unpacked to N x K (suffix -> tensor).
std::map<std::string, Tensor> unpack_layer(const SourceLayer& L, Precision precision, int64_t N, int64_t K) {
  std::map<std::string, Tensor> out;
  out["qweight"] = nunchaku::unpack_qweight(L.get("qweight"), N, K, L.name("qweight"));
  out["wscales"] = precision == Precision::INT4 ? nunchaku::unpack_wscales_int4(L.get("wscales"), N, K / 64, L.name("wscales"))
                                                : nunchaku::unpack_wscales_nvfp4(L.get("wscales"), N, K / 16, L.name("wscales"));
  out["smooth_factor"] = nunchaku::unpack_vector(L.get("smooth_factor"), K, L.name("smooth_factor"));
  if (L.has("smooth_factor_orig"))
    out["smooth_factor_orig"] = nunchaku::unpack_vector(L.get("smooth_factor_orig"), K, L.name("smooth_factor_orig"));
  out["proj_down"] = nunchaku::unpack_lora_down(L.get("proj_down"), K, L.name("proj_down"));
  out["proj_up"] = nunchaku::unpack_lora_up(L.get("proj_up"), N, L.name("proj_up"));
  if (L.has("bias")) out["bias"] = nunchaku::unpack_vector(L.get("bias"), N, L.name("bias"));
  if (L.has("wcscales")) out["wcscales"] = nunchaku::unpack_vector(L.get("wcscales"), N, L.name("wcscales"));
  if (L.has("wtscale")) out["wtscale"] = L.get("wtscale");
  return out;
}

// True when packing `c` back with the source's padded sizes gives the source bytes exactly.
bool repacks_exactly(const SourceLayer& L, Precision precision, const std::map<std::string, Tensor>& c) {
  const Tensor& q = L.get("qweight");
  const int64_t Np = q.size(0), Kp = q.size(1) * 2;
  auto eq = [&](const std::string& s, const Tensor& packed) { return same_bytes(packed, L.get(s)); };
  if (!eq("qweight", nunchaku::pack_qweight(c.at("qweight"), Np, Kp))) return false;
  const Tensor& ws = L.get("wscales");
  if (!eq("wscales", precision == Precision::INT4 ? nunchaku::pack_wscales_int4(c.at("wscales"), Np, ws.size(0))
                                                  : nunchaku::pack_wscales_nvfp4(c.at("wscales"), Np, ws.size(0) * 16)))
    return false;
  for (const char* v : {"smooth_factor", "smooth_factor_orig"})
    if (c.count(v) && !eq(v, nunchaku::pack_vector(c.at(v), Kp, v))) return false;
  for (const char* v : {"bias", "wcscales"})
    if (c.count(v) && !eq(v, nunchaku::pack_vector(c.at(v), Np, v))) return false;
  return eq("proj_down", nunchaku::pack_lora_down(c.at("proj_down"), Kp)) && eq("proj_up", nunchaku::pack_lora_up(c.at("proj_up"), Np));
}

bool matches_any(const std::vector<std::string>& patterns, const std::string& layer) {
  for (const auto& p : patterns)
    if (module_matches(p, layer)) return true;
  return false;
}

}  // namespace

ConvertReport convert_nunchaku_to_canonical(const fs::path& input, const fs::path& folder, const ConvertOptions& opt) {
  ConvertReport rep;
  auto warn = [&](const std::string& w) {
    rep.warnings.push_back(w);
    if (opt.warn)
      opt.warn(w);
    else
      std::fprintf(stderr, "warning: %s\n", w.c_str());
  };
  const SafetensorsFile f = SafetensorsFile::open(input);
  const std::string file = input.string();
  const auto& md = f.metadata();

  // ---- metadata
  std::string model_class;
  if (md.count("model_class"))
    model_class = md.at("model_class");
  else
    warn(file + ": no 'model_class' metadata; the model family (true layer sizes, unsigned layers) is unknown");
  const Family family = family_of(model_class);
  if (!model_class.empty() && family == Family::UNKNOWN)
    warn(file + ": model_class '" + model_class + "' has no svdquant size/activation rules; padded sizes are kept");
  json config = json::object();
  if (md.count("config")) {
    try {
      config = json::parse(md.at("config"));
    } catch (const json::parse_error& e) {
      throw ConfigError(file + ": metadata 'config' is not valid JSON (" + e.what() + ")");
    }
    if (!config.is_object()) throw ConfigError(file + ": metadata 'config' is not a JSON object");
  } else {
    warn(file + ": no 'config' metadata; the canonical config.json holds only the quantization_config");
  }

  // ---- group tensors into layers
  std::map<std::string, std::map<std::string, std::string>> children;  // prefix -> last component -> name
  for (const auto& n : f.names()) {
    auto [prefix, last] = split_last(n);
    if (!prefix.empty()) children[prefix][last] = n;
  }
  std::vector<SourceLayer> layers;
  std::set<std::string> layer_tensor_names;
  std::vector<std::string> awq_layers;
  for (const auto& [prefix, kids] : children) {
    const bool has_q = kids.count("qweight") != 0;
    if (kids.count("wzeros")) {  // AWQ W4A16 (nunchaku's modulation layers): carried over unchanged
      if (!has_q) throw FormatError(file + ": layer " + prefix + " has wzeros but no " + prefix + ".qweight");
      awq_layers.push_back(prefix);
      continue;
    }
    bool w4a4_key = false;
    for (const auto& [last, name] : kids)
      if (!canonical_suffix(last).empty() && last != "bias") w4a4_key = true;
    if (!w4a4_key) continue;  // an ordinary module (weight/bias...): unquantized
    if (!has_q) {
      std::string some;
      for (const auto& [last, name] : kids) some += (some.empty() ? "" : ", ") + name;
      throw FormatError(file + ": missing tensor " + prefix + ".qweight (the layer has " + some + ")");
    }
    SourceLayer L;
    L.prefix = prefix;
    for (const auto& [last, name] : kids) {
      const std::string canon = canonical_suffix(last);
      if (canon.empty())
        throw FormatError(file + ": unexpected tensor " + name + " in quantized layer " + prefix +
                          " (a nunchaku W4A4 layer has qweight, wscales, bias, smooth/smooth_factor, smooth_orig/smooth_factor_orig, "
                          "lora_down/proj_down, lora_up/proj_up, wcscales, wtscale)");
      if (L.names.count(canon))
        throw FormatError(file + ": layer " + prefix + " has both " + L.names[canon] + " and " + name + " (two spellings of one tensor)");
      L.names[canon] = name;
      L.t[canon] = f.tensor(name);
      layer_tensor_names.insert(name);
    }
    layers.push_back(std::move(L));
  }
  if (layers.empty()) throw FormatError(file + ": no nunchaku W4A4 layer (no tensor named <layer>.qweight with wscales and a low-rank branch)");

  // ---- precision
  Precision precision;
  if (md.count("quantization_config")) {
    precision = parse_nunchaku_precision(md.at("quantization_config"), file + ": metadata quantization_config");
  } else {
    precision = layers.front().get("wscales").dtype() == DType::F8_E4M3 ? Precision::NVFP4 : Precision::INT4;
    warn(file + ": no 'quantization_config' metadata; precision " + std::string(to_string(precision)) + " inferred from " +
         layers.front().name("wscales"));
  }
  const int64_t G = group_size(precision);

  // ---- key spelling (recorded so the inverse writes the same names)
  const bool lora_style = layers.front().names.at("proj_down").ends_with(".lora_down");
  for (const auto& L : layers)
    if (L.names.at("proj_down").ends_with(".lora_down") != lora_style)
      warn(file + ": layers use both lora_down/lora_up and proj_down/proj_up spellings; the inverse conversion writes " +
           std::string(lora_style ? "lora_down/lora_up" : "proj_down/proj_up") + " for all");

  // ---- validate every layer and classify its activations before converting anything
  std::vector<std::string> unclassified;
  std::vector<LayerFacts> facts;
  for (const auto& L : layers) {
    check_source_layer(L, precision);
    LayerFacts lf = layer_facts(family, config, L.prefix, precision);
    if (precision == Precision::INT4) {
      const bool u = matches_any(opt.act_unsigned, L.prefix), s = matches_any(opt.act_signed, L.prefix);
      if (u && s) throw ConfigError("layer " + L.prefix + " matches both --act-unsigned and --act-signed");
      if (u) lf.act = Signedness::UNSIGNED;
      if (s) lf.act = Signedness::SIGNED;
    }
    if (lf.act == Signedness::UNKNOWN) unclassified.push_back(L.prefix);
    facts.push_back(lf);
  }
  if (!unclassified.empty()) {
    std::string list;
    for (size_t i = 0; i < unclassified.size() && i < 20; ++i) list += "\n  " + unclassified[i];
    if (unclassified.size() > 20) list += "\n  ... (" + std::to_string(unclassified.size() - 20) + " more)";
    throw ConfigError(file + ": cannot tell whether " + std::to_string(unclassified.size()) +
                      " int4 layer(s) take unsigned (GELU-shifted) activations (model_class '" + model_class +
                      "'); name them with --act-unsigned / --act-signed:" + list);
  }
  const int rank = int(layers.front().get("proj_up").size(1));
  for (const auto& L : layers)
    if (L.get("proj_up").size(1) != rank)
      throw FormatError(file + ": " + L.name("proj_up") + " has rank " + std::to_string(L.get("proj_up").size(1)) + " but " +
                        layers.front().name("proj_up") + " has rank " + std::to_string(rank) +
                        "; a canonical checkpoint has one rank");

  // ---- convert: each layer is an independent job (a few threads); results are collected in
  // layer order, so the output does not depend on the scheduling.
  QuantConfig quant;
  quant.rank = rank;
  quant.precision = precision;
  quant.modules_to_not_convert = awq_layers;
  struct Result {
    std::vector<std::pair<std::string, Tensor>> tensors;
    std::vector<std::string> warnings;
    bool padded = false, unknown_sizes = false, act_unsigned = false;
  };
  std::vector<Result> results(layers.size());
  {
    Progress bar("convert", layers.size(), opt.progress);
    for_each_layer(layers.size(), [&](size_t li) {
      const SourceLayer& L = layers[li];
      const LayerFacts& lf = facts[li];
      Result& res = results[li];
      const Tensor& q = L.get("qweight");
      const int64_t Np = q.size(0), Kp = q.size(1) * 2;
      const int64_t Ks = precision == Precision::INT4 ? Kp : L.get("wscales").size(0) * 16;
      int64_t N = Np, K = Ks;
      if (lf.N && lf.K) {
        int64_t n = *lf.N, k = nunchaku::round_up(*lf.K, G);
        if (nunchaku::padded_n(n) != Np || nunchaku::padded_k(k) != Kp || k > Ks) {
          res.warnings.push_back("layer " + L.prefix + ": the model config gives [N, K] = [" + std::to_string(*lf.N) + ", " +
                                 std::to_string(*lf.K) + "] but " + L.name("qweight") + " is padded to [" + std::to_string(Np) + ", " +
                                 std::to_string(Kp) + "]; keeping the padded sizes");
          res.padded = true;
        } else {
          if (k != *lf.K)
            res.warnings.push_back("layer " + L.prefix + ": K = " + std::to_string(*lf.K) +
                                   " is not a multiple of the group size; keeping K = " + std::to_string(k));
          N = n;
          K = k;
        }
      } else {
        res.unknown_sizes = res.padded = true;
      }
      const bool strip = N != Np || K != Kp;
      std::map<std::string, Tensor> c = unpack_layer(L, precision, N, K);
      if (strip && !repacks_exactly(L, precision, c)) {
        if (K == Ks && N == Np)  // only nvfp4's qweight K padding beyond the scales: cannot keep it
          throw FormatError(L.name("qweight") + ": codes beyond K = " + std::to_string(Ks) + " (the extent of " + L.name("wscales") +
                            ") are not zero padding");
        res.warnings.push_back("layer " + L.prefix +
                               ": the padding does not hold nunchaku's fills (zero weights, unit scales); keeping padded sizes");
        res.padded = true;
        N = Np;
        K = Ks;
        c = unpack_layer(L, precision, N, K);
        if (K != Kp && !repacks_exactly(L, precision, c))
          throw FormatError(L.name("qweight") + ": codes beyond K = " + std::to_string(Ks) + " (the extent of " + L.name("wscales") +
                            ") are not zero padding");
      }
      // The canonical layer must pass the same validation the runtime applies.
      res.act_unsigned = lf.act == Signedness::UNSIGNED;
      LayerWeights w;
      w.prefix = L.prefix;
      w.qweight = c.at("qweight");
      w.wscales = c.at("wscales");
      w.smooth = c.at("smooth_factor");
      w.proj_down = c.at("proj_down");
      w.proj_up = c.at("proj_up");
      if (c.count("bias")) w.bias = c.at("bias");
      if (c.count("wcscales")) w.wcscales = c.at("wcscales");
      if (c.count("wtscale")) w.wtscale = c.at("wtscale");
      w.validate(precision, res.act_unsigned);
      res.tensors = layer_tensors(w);
      if (c.count("smooth_factor_orig")) res.tensors.emplace_back(L.prefix + ".smooth_factor_orig", c.at("smooth_factor_orig"));
      bar.step(L.prefix);
    });
  }
  std::vector<std::pair<std::string, Tensor>> out;
  std::set<std::string> emitted;
  size_t unknown_sizes = 0;
  for (size_t li = 0; li < layers.size(); ++li) {
    Result& res = results[li];
    const SourceLayer& L = layers[li];
    for (const auto& w : res.warnings) warn(w);
    if (res.padded) rep.padded_layers.push_back(L.prefix);
    unknown_sizes += res.unknown_sizes;
    for (auto& [name, t] : res.tensors) {
      rep.output_bytes += t.nbytes();
      emitted.insert(name);
      out.emplace_back(name, std::move(t));
    }
    for (const auto& [s, t] : L.t) rep.input_bytes += t.nbytes();
    if (res.act_unsigned) {
      quant.act_unsigned_modules.push_back(L.prefix);
      rep.act_unsigned_layers.push_back(L.prefix);
    }
    rep.quantized_layers.push_back(L.prefix);
  }
  if (unknown_sizes)
    warn(std::to_string(unknown_sizes) + " layer(s) have no true sizes in the model config (model_class '" + model_class +
         "'); their padded sizes are kept");

  // ---- unquantized tensors, unchanged
  for (const auto& n : f.names()) {
    if (layer_tensor_names.count(n)) continue;
    if (emitted.count(n)) throw FormatError(file + ": tensor " + n + " collides with a converted layer tensor");
    Tensor t = f.tensor(n);
    rep.input_bytes += t.nbytes();
    rep.output_bytes += t.nbytes();
    rep.carried_tensors.push_back(n);
    out.emplace_back(n, t);
  }

  // act_unsigned_modules must select exactly the unsigned layers (module patterns match prefixes).
  for (const auto& L : layers) {
    const bool want = std::find(rep.act_unsigned_layers.begin(), rep.act_unsigned_layers.end(), L.prefix) != rep.act_unsigned_layers.end();
    if (quant.layer_act_unsigned(L.prefix) != want || quant.layer_skipped(L.prefix))
      throw Error("internal: act_unsigned_modules / modules_to_not_convert do not select layer " + L.prefix + " as intended");
  }

  // ---- config.json: the model config plus what the inverse needs to restore nunchaku's metadata
  json nun = json::object();
  nun["model_class"] = model_class;
  nun["key_style"] = lora_style ? "lora" : "proj";
  json extra = json::object();
  for (const auto& [k, v] : md)
    if (k != "config" && k != "model_class" && k != "format") extra[k] = v;
  nun["metadata"] = extra;
  config["_nunchaku"] = nun;
  write_checkpoint_folder(folder, config.dump(), quant, out, opt.shard_bytes);
  return rep;
}

}  // namespace svdquant
