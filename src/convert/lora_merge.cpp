// LoRA merge into the low-rank branch (include/svdquant/lora_merge.hpp).
#include "svdquant/lora_merge.hpp"

#include <algorithm>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "svdquant/checkpoint.hpp"
#include "svdquant/error.hpp"
#include "svdquant/float_formats.hpp"
#include "svdquant/layout_nunchaku.hpp"
#include "svdquant/safetensors.hpp"

namespace svdquant {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct LoraModule {
  std::string a_name, b_name, alpha_name;
  Tensor A, B;  // [r, K], [N, r]
  std::optional<double> alpha;
};

bool strip_suffix(std::string& s, const std::string& suffix) {
  if (s.size() < suffix.size() || s.compare(s.size() - suffix.size(), suffix.size(), suffix) != 0) return false;
  s.resize(s.size() - suffix.size());
  return true;
}

std::string module_of(std::string name) {
  for (const char* p : {"base_model.model.", "transformer."})
    if (name.rfind(p, 0) == 0) name = name.substr(std::string(p).size());
  return name;
}

std::map<std::string, LoraModule> read_lora(const SafetensorsFile& f) {
  std::map<std::string, LoraModule> mods;
  const std::string file = f.path().string();
  for (const auto& n : f.names()) {
    std::string m = n;
    if (strip_suffix(m, ".lora_A.weight") || strip_suffix(m, ".lora_down.weight")) {
      LoraModule& L = mods[module_of(m)];
      if (!L.a_name.empty()) throw FormatError(file + ": " + n + " and " + L.a_name + " are two down projections of one module");
      L.a_name = n;
      L.A = f.tensor(n);
    } else if (strip_suffix(m, ".lora_B.weight") || strip_suffix(m, ".lora_up.weight")) {
      LoraModule& L = mods[module_of(m)];
      if (!L.b_name.empty()) throw FormatError(file + ": " + n + " and " + L.b_name + " are two up projections of one module");
      L.b_name = n;
      L.B = f.tensor(n);
    } else if (strip_suffix(m, ".alpha")) {
      LoraModule& L = mods[module_of(m)];
      const Tensor t = f.tensor(n);
      if (t.numel() != 1) throw FormatError(file + ": " + n + " must hold one value, found " + shape_str(t.shape()));
      L.alpha_name = n;
      L.alpha = element_as_double(t, 0);
    } else {
      throw FormatError(file + ": unexpected tensor " + n + " (a LoRA holds <module>.lora_A.weight, <module>.lora_B.weight and optionally <module>.alpha)");
    }
  }
  for (auto& [m, L] : mods) {
    if (L.a_name.empty() || L.b_name.empty())
      throw FormatError(file + ": module " + m + " has " + (L.a_name.empty() ? L.b_name + " but no lora_A/lora_down" : L.a_name + " but no lora_B/lora_up"));
    auto is_float = [](DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; };
    if (L.A.dim() != 2 || !is_float(L.A.dtype()))
      throw FormatError(file + ": " + L.a_name + ": expected a float [r, K] matrix, found " + std::string(dtype_name(L.A.dtype())) + " " + shape_str(L.A.shape()));
    if (L.B.dim() != 2 || !is_float(L.B.dtype()))
      throw FormatError(file + ": " + L.b_name + ": expected a float [N, r] matrix, found " + std::string(dtype_name(L.B.dtype())) + " " + shape_str(L.B.shape()));
    if (L.A.size(0) != L.B.size(1))
      throw FormatError(file + ": rank mismatch: " + L.a_name + " " + shape_str(L.A.shape()) + " has rank " + std::to_string(L.A.size(0)) + ", " +
                        L.b_name + " " + shape_str(L.B.shape()) + " has rank " + std::to_string(L.B.size(1)));
  }
  return mods;
}

// [rows, R] T -> [rows, new_R] T: old columns, then `extra` columns (rows x r values of T given
// as float, already exact in T), then zeros.
Tensor widen(const Tensor& old, int64_t new_R, const std::vector<uint16_t>* extra, int64_t r) {
  const Tensor o = old.is_contiguous() ? old : old.clone();
  const int64_t rows = o.size(0), R = o.size(1);
  Tensor out = Tensor::zeros(o.dtype(), {rows, new_R});
  const auto* src = o.data_as<uint16_t>();
  auto* dst = out.data_as<uint16_t>();
  for (int64_t i = 0; i < rows; ++i) {
    std::copy(src + i * R, src + (i + 1) * R, dst + i * new_R);
    if (extra)
      for (int64_t j = 0; j < r; ++j) dst[i * new_R + R + j] = (*extra)[size_t(i * r + j)];
  }
  return out;
}

}  // namespace

LoraMergeReport merge_lora(const fs::path& folder, const fs::path& lora_file, const fs::path& out_folder, const LoraMergeOptions& opt) {
  LoraMergeReport rep;
  auto warn = [&](const std::string& w) {
    if (opt.warn)
      opt.warn(w);
    else
      std::fprintf(stderr, "warning: %s\n", w.c_str());
  };
  const Checkpoint ck = Checkpoint::open(folder);
  if (!ck.quant_config()) throw ConfigError(folder.string() + ": no quantization_config (not a quantized canonical checkpoint)");
  const SafetensorsFile lf = SafetensorsFile::open(lora_file);
  const auto mods = read_lora(lf);
  const std::string lfile = lora_file.string();

  std::vector<std::string> layers;
  for (const auto& p : ck.quantized_layers())
    if (!ck.has_tensor(p + ".wzeros")) layers.push_back(p);
  const std::set<std::string> layer_set(layers.begin(), layers.end());
  int64_t max_r = 0;
  for (const auto& [m, L] : mods) {
    if (!layer_set.count(m)) {
      rep.unmatched_modules.push_back(m);
      continue;
    }
    max_r = std::max(max_r, L.A.size(0));
  }
  if (rep.unmatched_modules.size() == mods.size())
    throw FormatError(lfile + ": none of its " + std::to_string(mods.size()) + " LoRA module(s) names a quantized layer of " + folder.string() +
                      (mods.empty() ? "" : " (e.g. '" + mods.begin()->first + "')"));
  for (const auto& m : rep.unmatched_modules) warn(lfile + ": LoRA module " + m + " matches no quantized layer; it is not applied");

  rep.old_rank = ck.quant_config()->rank;
  rep.new_rank = rep.old_rank + nunchaku::round_up(max_r, 16);
  const float coef_s = opt.strength;

  std::map<std::string, Tensor> replaced;  // tensor name in ck -> merged tensor
  for (const auto& p : layers) {
    const LayerWeights w = ck.layer(p);
    const LayerDesc& d = w.desc;
    const std::string down_name = ck.has_tensor(p + ".proj_down") ? p + ".proj_down" : p + ".lora_down";
    const std::string up_name = ck.has_tensor(p + ".proj_up") ? p + ".proj_up" : p + ".lora_up";
    auto it = mods.find(p);
    if (it == mods.end()) {
      replaced[down_name] = widen(w.proj_down, rep.new_rank, nullptr, 0);
      replaced[up_name] = widen(w.proj_up, rep.new_rank, nullptr, 0);
      continue;
    }
    const LoraModule& L = it->second;
    const int64_t r = L.A.size(0);
    if (L.A.size(1) != d.K)
      throw FormatError(lfile + ": " + L.a_name + " " + shape_str(L.A.shape()) + " does not match layer " + p + " (K = " + std::to_string(d.K) + ")");
    if (L.B.size(0) != d.N)
      throw FormatError(lfile + ": " + L.b_name + " " + shape_str(L.B.shape()) + " does not match layer " + p + " (N = " + std::to_string(d.N) + ")");
    // The per-module scale: strength times alpha / r (kohya-style files), one float32 product.
    const float coef = L.alpha ? coef_s * float(*L.alpha / double(r)) : coef_s;
    std::vector<uint16_t> down(size_t(d.K * r)), up(size_t(d.N * r));
    for (int64_t k = 0; k < d.K; ++k)
      for (int64_t j = 0; j < r; ++j) down[size_t(k * r + j)] = f32_to_half(d.dtype, float(element_as_double(L.A, j * d.K + k)));
    for (int64_t n = 0; n < d.N; ++n)
      for (int64_t j = 0; j < r; ++j) up[size_t(n * r + j)] = f32_to_half(d.dtype, coef * float(element_as_double(L.B, n * r + j)));
    replaced[down_name] = widen(w.proj_down, rep.new_rank, &down, r);
    replaced[up_name] = widen(w.proj_up, rep.new_rank, &up, r);
    rep.merged_layers.push_back(p);
  }

  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& n : ck.tensor_names()) {
    auto it = replaced.find(n);
    out.emplace_back(n, it != replaced.end() ? it->second : ck.tensor(n));
  }
  json config = json::object();
  if (!ck.config_json().empty()) config = json::parse(ck.config_json());
  config.erase("quantization_config");
  QuantConfig quant = *ck.quant_config();
  quant.rank = int(rep.new_rank);
  write_checkpoint_folder(out_folder, config.dump(), quant, out, opt.shard_bytes);
  return rep;
}

}  // namespace svdquant
