// The canonical checkpoint (docs/FORMAT.md): reading folders, files and shards; validating layers;
// writing folders atomically.
#include "svdquant/checkpoint.hpp"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "atomic_file.hpp"
#include "svdquant/error.hpp"

namespace svdquant {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kWeightsFile = "diffusion_pytorch_model.safetensors";
constexpr const char* kIndexFile = "diffusion_pytorch_model.safetensors.index.json";

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw FormatError(p.string() + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool is_half(DType t) { return t == DType::BF16 || t == DType::F16; }

// First present spelling of a tensor, or "" if none.
std::string pick(const Checkpoint& c, const std::string& prefix, std::initializer_list<const char*> names) {
  for (const char* n : names)
    if (c.has_tensor(prefix + "." + n)) return prefix + "." + n;
  return "";
}

}  // namespace

// ---------------------------------------------------------------- LayerWeights

void LayerWeights::validate(Precision precision, bool act_unsigned) {
  const std::string& p = prefix;
  auto need = [&](const Tensor& t, const char* name) {
    if (!t.data()) throw FormatError(p + "." + name + ": missing");
  };
  need(qweight, "qweight");
  need(wscales, "wscales");
  need(smooth, "smooth_factor");
  need(proj_down, "proj_down");
  need(proj_up, "proj_up");
  if (qweight.dim() != 2 || (qweight.dtype() != DType::I8 && qweight.dtype() != DType::U8))
    throw FormatError(p + ".qweight: expected int8 [N, K/2], found " + std::string(dtype_name(qweight.dtype())) + " " + shape_str(qweight.shape()));
  LayerDesc d;
  d.precision = precision;
  d.N = qweight.size(0);
  d.K = qweight.size(1) * 2;
  const int64_t G = group_size(precision);
  if (d.N < 1 || d.K < 1) throw FormatError(p + ".qweight: empty shape " + shape_str(qweight.shape()));
  if (d.K % G != 0)
    throw FormatError(p + ".qweight: K = " + std::to_string(d.K) + " is not a multiple of the group size " + std::to_string(G) + " (" + std::string(to_string(precision)) + ")");
  if (!is_half(proj_up.dtype())) throw FormatError(p + ".proj_up: dtype " + std::string(dtype_name(proj_up.dtype())) + " is neither BF16 nor F16");
  const DType T = proj_up.dtype();
  d.dtype = T == DType::BF16 ? HalfKind::BF16 : HalfKind::FP16;
  if (proj_up.dim() != 2 || proj_up.size(0) != d.N)
    throw FormatError(p + ".proj_up: expected [N = " + std::to_string(d.N) + ", R], found " + shape_str(proj_up.shape()));
  d.R = proj_up.size(1);
  if (proj_down.dim() == 2 && proj_down.size(0) == d.K && proj_down.size(1) != d.R)
    throw FormatError(p + ": rank mismatch: proj_down " + shape_str(proj_down.shape()) + " has rank " + std::to_string(proj_down.size(1)) +
                      ", proj_up " + shape_str(proj_up.shape()) + " has rank " + std::to_string(d.R));
  expect_tensor(proj_down, p + ".proj_down", T, {d.K, d.R});
  expect_tensor(qweight, p + ".qweight", qweight.dtype(), {d.N, d.K / 2});
  expect_tensor(wscales, p + ".wscales", precision == Precision::INT4 ? T : DType::F8_E4M3, {d.K / G, d.N});
  expect_tensor(smooth, p + ".smooth_factor", T, {d.K});
  if (bias.data()) expect_tensor(bias, p + ".bias", T, {d.N});
  if (wcscales.data()) expect_tensor(wcscales, p + ".wcscales", T, {d.N});
  if (wtscale.data()) {
    if (wtscale.numel() != 1 || !(is_half(wtscale.dtype()) || wtscale.dtype() == DType::F32))
      throw FormatError(p + ".wtscale: expected one BF16/F16/F32 value, found " + std::string(dtype_name(wtscale.dtype())) + " " + shape_str(wtscale.shape()));
  }
  if (act_unsigned && precision != Precision::INT4)
    throw FormatError(p + ": act_unsigned is defined for int4 layers only");
  d.act_unsigned = act_unsigned;
  d.has_bias = bias.data() != nullptr;
  for (const Tensor* t : {&qweight, &wscales, &smooth, &proj_down, &proj_up, &bias, &wcscales, &wtscale})
    if (t->data() && t->device().type != DeviceType::CPU) throw FormatError(p + ": layer tensors must be host tensors");
  desc = d;
}

float LayerWeights::alpha() const {
  if (!wtscale.data()) return 1.0f;
  return float(element_as_double(wtscale, 0));
}

std::vector<std::pair<std::string, Tensor>> layer_tensors(const LayerWeights& w) {
  std::vector<std::pair<std::string, Tensor>> out;
  auto add = [&](const char* n, const Tensor& t) {
    if (t.data()) out.emplace_back(w.prefix + "." + n, t);
  };
  add("qweight", w.qweight);
  add("wscales", w.wscales);
  add("smooth_factor", w.smooth);
  add("proj_down", w.proj_down);
  add("proj_up", w.proj_up);
  add("bias", w.bias);
  add("wcscales", w.wcscales);
  add("wtscale", w.wtscale);
  return out;
}

// ---------------------------------------------------------------- Checkpoint

Checkpoint Checkpoint::open(const fs::path& path, const std::string& component) {
  Checkpoint c;
  c.path_ = path;
  std::error_code ec;
  std::vector<fs::path> weight_files;
  if (fs::is_regular_file(path, ec)) {
    weight_files.push_back(path);
  } else if (fs::is_directory(path, ec)) {
    fs::path dir = path;
    if (!fs::exists(dir / "config.json") && fs::is_directory(dir / component)) dir = dir / component;
    if (fs::exists(dir / "config.json")) {
      c.config_json_ = read_text(dir / "config.json");
      c.quant_ = read_quantization_config_file((dir / "config.json").string(), component);
    }
    if (fs::exists(dir / kIndexFile)) {
      json idx;
      try {
        idx = json::parse(read_text(dir / kIndexFile));
      } catch (const json::parse_error& e) {
        throw FormatError((dir / kIndexFile).string() + ": invalid JSON (" + e.what() + ")");
      }
      if (!idx.is_object() || !idx.contains("weight_map") || !idx["weight_map"].is_object())
        throw FormatError((dir / kIndexFile).string() + ": missing object 'weight_map'");
      std::set<std::string> shards;
      for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
        if (!it.value().is_string()) throw FormatError((dir / kIndexFile).string() + ": weight_map." + it.key() + " is not a file name");
        shards.insert(it.value().get<std::string>());
      }
      for (const auto& s : shards) weight_files.push_back(dir / s);
    } else if (fs::exists(dir / kWeightsFile)) {
      weight_files.push_back(dir / kWeightsFile);
    } else {
      for (const auto& e : fs::directory_iterator(dir))
        if (e.path().extension() == ".safetensors") weight_files.push_back(e.path());
      std::sort(weight_files.begin(), weight_files.end());
    }
    if (weight_files.empty()) throw FormatError(dir.string() + ": no .safetensors weights found");
  } else {
    throw FormatError(path.string() + ": no such file or folder");
  }
  for (const auto& f : weight_files) {
    c.files_.push_back(SafetensorsFile::open(f));
    const auto& sf = c.files_.back();
    for (const auto& n : sf.names()) {
      if (!c.where_.emplace(n, c.files_.size() - 1).second)
        throw FormatError(f.string() + ": tensor '" + n + "' also appears in another shard");
    }
  }
  if (c.config_json_.empty() && c.files_.size() == 1) {
    const auto& md = c.files_[0].metadata();
    if (md.count("model_class") || md.count("comfy_config"))
      throw FormatError(path.string() + ": this is a nunchaku-packed file (fragment layout); convert it first with "
                        "`svdquant convert " + path.string() + " -o <folder>`");
    if (md.count("quantization_config")) c.quant_ = parse_quantization_config(md.at("quantization_config"), component);
  }
  return c;
}

std::vector<std::string> Checkpoint::tensor_names() const {
  std::vector<std::string> out;
  for (const auto& [n, i] : where_) out.push_back(n);
  return out;
}

bool Checkpoint::has_tensor(const std::string& name) const { return where_.count(name) != 0; }

const TensorInfo& Checkpoint::info(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw FormatError(path_.string() + ": no tensor named '" + name + "'");
  return files_[it->second].info(name);
}

Tensor Checkpoint::tensor(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw FormatError(path_.string() + ": no tensor named '" + name + "'");
  return files_[it->second].tensor(name);
}

std::vector<std::string> Checkpoint::quantized_layers() const {
  std::vector<std::string> out;
  const std::string suffix = ".qweight";
  for (const auto& [n, i] : where_)
    if (n.size() > suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0)
      out.push_back(n.substr(0, n.size() - suffix.size()));
  return out;
}

LayerWeights Checkpoint::layer(const std::string& prefix) const {
  if (!has_tensor(prefix + ".qweight")) {
    auto layers = quantized_layers();
    std::string hint = layers.empty() ? "the checkpoint has no quantized layers" : "e.g. '" + layers.front() + "'";
    throw FormatError(path_.string() + ": no quantized layer '" + prefix + "' (" + hint + ")");
  }
  LayerWeights w;
  w.prefix = prefix;
  auto get = [&](std::initializer_list<const char*> names, bool required) -> Tensor {
    std::string n = pick(*this, prefix, names);
    if (n.empty()) {
      if (required) throw FormatError(path_.string() + ": layer '" + prefix + "' lacks " + prefix + "." + *names.begin());
      return Tensor();
    }
    return tensor(n);
  };
  w.qweight = get({"qweight"}, true);
  w.wscales = get({"wscales"}, true);
  w.smooth = get({"smooth_factor", "smooth"}, true);
  w.proj_down = get({"proj_down", "lora_down"}, true);
  w.proj_up = get({"proj_up", "lora_up"}, true);
  w.bias = get({"bias"}, false);
  w.wcscales = get({"wcscales"}, false);
  w.wtscale = get({"wtscale"}, false);
  Precision precision;
  bool unsigned_act = false;
  if (quant_) {
    precision = quant_->precision;
    unsigned_act = quant_->layer_act_unsigned(prefix);
    if (w.proj_up.dim() == 2 && quant_->rank != w.proj_up.size(1))
      throw FormatError(prefix + ".proj_up: rank " + std::to_string(w.proj_up.size(1)) + " differs from quantization_config.rank = " + std::to_string(quant_->rank));
  } else {
    precision = w.wscales.dtype() == DType::F8_E4M3 ? Precision::NVFP4 : Precision::INT4;
  }
  w.validate(precision, unsigned_act);
  return w;
}

// ---------------------------------------------------------------- writer

void write_checkpoint_folder(const fs::path& folder, const std::string& config_json, const QuantConfig& quant,
                             const std::vector<std::pair<std::string, Tensor>>& tensors, uint64_t shard_bytes) {
  std::error_code ec;
  if (fs::exists(folder, ec) && !(fs::is_directory(folder, ec) && fs::is_empty(folder, ec)))
    throw Error(folder.string() + ": output already exists; choose a new folder or remove it");
  json cfg;
  try {
    cfg = config_json.empty() ? json::object() : json::parse(config_json);
  } catch (const json::parse_error& e) {
    throw ConfigError(std::string("model config: invalid JSON (") + e.what() + ")");
  }
  if (!cfg.is_object()) throw ConfigError("model config: expected a JSON object");
  cfg["quantization_config"] = json::parse(quant.to_json());
  if (shard_bytes == 0) shard_bytes = 1;

  // Greedy sharding in the given order.
  std::vector<std::vector<size_t>> shards(1);
  uint64_t cur = 0, total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    uint64_t nb = tensors[i].second.nbytes();
    if (cur > 0 && cur + nb > shard_bytes) {
      shards.emplace_back();
      cur = 0;
    }
    shards.back().push_back(i);
    cur += nb;
    total += nb;
  }
  detail::write_atomically(folder, [&](const fs::path& tmp) {
    fs::create_directories(tmp / "transformer");
    {
      std::ofstream out(tmp / "transformer" / "config.json");
      out << cfg.dump(2) << "\n";
      if (!out) throw Error("cannot write " + (tmp / "transformer" / "config.json").string());
    }
    if (shards.size() == 1) {
      write_safetensors(tmp / "transformer" / kWeightsFile, tensors, {{"format", "pt"}});
      return;
    }
    json index = {{"metadata", {{"total_size", total}}}, {"weight_map", json::object()}};
    const size_t n = shards.size();
    for (size_t s = 0; s < n; ++s) {
      char name[96];
      std::snprintf(name, sizeof name, "diffusion_pytorch_model-%05zu-of-%05zu.safetensors", s + 1, n);
      std::vector<std::pair<std::string, Tensor>> part;
      for (size_t i : shards[s]) {
        part.push_back(tensors[i]);
        index["weight_map"][tensors[i].first] = name;
      }
      write_safetensors(tmp / "transformer" / name, part, {{"format", "pt"}});
    }
    std::ofstream out(tmp / "transformer" / kIndexFile);
    out << index.dump(2) << "\n";
    if (!out) throw Error("cannot write the shard index");
  });
}

}  // namespace svdquant
