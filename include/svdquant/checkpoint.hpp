// The canonical SVDQuant checkpoint (docs/FORMAT.md): per quantized linear `<prefix>.` the tensors
// qweight, wscales, smooth_factor, proj_down, proj_up, and optionally bias, wcscales, wtscale.
// Nunchaku's spellings (smooth, lora_down, lora_up) are accepted; smooth_orig is ignored.
#pragma once
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "svdquant/config.hpp"
#include "svdquant/float_formats.hpp"
#include "svdquant/numerics.hpp"
#include "svdquant/safetensors.hpp"
#include "svdquant/tensor.hpp"

namespace svdquant {

// Shape facts of one quantized layer.
struct LayerDesc {
  Precision precision = Precision::INT4;
  HalfKind dtype = HalfKind::BF16;  // T, the layer dtype
  int64_t N = 0, K = 0, R = 0;
  bool act_unsigned = false;
  bool has_bias = false;
};

// One quantized linear layer in canonical form (host tensors, possibly views into a mapping).
struct LayerWeights {
  std::string prefix;
  LayerDesc desc;
  Tensor qweight;    // int8 [N, K/2]
  Tensor wscales;    // [K/G, N]: T (int4, G = 64) or F8_E4M3 (nvfp4, G = 16)
  Tensor smooth;     // [K] T
  Tensor proj_down;  // [K, R] T
  Tensor proj_up;    // [N, R] T
  Tensor bias;       // [N] T, or undefined
  Tensor wcscales;   // [N] T, or undefined (all ones)
  Tensor wtscale;    // [1] T or F32, or undefined (1)

  // Fills `desc` from the tensors and checks every shape and dtype against FORMAT.md; throws
  // FormatError naming `<prefix>.<tensor>`.
  void validate(Precision precision, bool act_unsigned);
  float alpha() const;  // wtscale as float, 1 if absent
};

// A canonical checkpoint: a diffusers folder (root with transformer/, or the component folder
// itself) or a single .safetensors file. Shards with a *.safetensors.index.json are supported.
class Checkpoint {
 public:
  static Checkpoint open(const std::filesystem::path& path, const std::string& component = "transformer");

  const std::filesystem::path& path() const { return path_; }
  // The model config (config.json) as JSON text, empty if there is none.
  const std::string& config_json() const { return config_json_; }
  const std::optional<QuantConfig>& quant_config() const { return quant_; }

  std::vector<std::string> tensor_names() const;
  bool has_tensor(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;
  Tensor tensor(const std::string& name) const;
  const std::vector<SafetensorsFile>& files() const { return files_; }

  // Prefixes `<prefix>` of every quantized layer (those with `<prefix>.qweight`), sorted.
  std::vector<std::string> quantized_layers() const;
  // Loads and validates one layer; precision/act_unsigned from the quantization_config.
  LayerWeights layer(const std::string& prefix) const;

 private:
  std::filesystem::path path_;
  std::string config_json_;
  std::optional<QuantConfig> quant_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t> where_;  // tensor name -> file index
};

// Writes a canonical diffusers folder `<folder>/transformer/{config.json, weights}` atomically: it
// is assembled in a temporary sibling folder and renamed into place. `config_json` is the model
// config (object, may be "{}"); `quant` is stored under "quantization_config". Above
// `shard_bytes` the weights are split into shards with an index.
void write_checkpoint_folder(const std::filesystem::path& folder, const std::string& config_json,
                             const QuantConfig& quant,
                             const std::vector<std::pair<std::string, Tensor>>& tensors,
                             uint64_t shard_bytes = uint64_t(5) << 30);

// The tensors of one layer under `<prefix>.` canonical names (for writers).
std::vector<std::pair<std::string, Tensor>> layer_tensors(const LayerWeights& w);

}  // namespace svdquant
