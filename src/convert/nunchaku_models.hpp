// What svdquant knows about the model families nunchaku ships (private to src/convert): for a
// quantized layer of a given model class, its true (unpadded) N and K from the model config and
// whether nunchaku feeds it unsigned (GELU-shifted) int4 activations, plus the tensor spelling the
// family's nunchaku loader expects.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "svdquant/numerics.hpp"

namespace svdquant::convert {

enum class Family : uint8_t { UNKNOWN, FLUX, QWEN_IMAGE };

// Tensor names of a nunchaku W4A4 layer: the C++ FLUX model uses lora_down/lora_up/smooth/
// smooth_orig; the Python models (Qwen-Image, Z-Image, SANA, ...) use proj_down/proj_up/
// smooth_factor/smooth_factor_orig.
enum class KeyStyle : uint8_t { LORA, PROJ };

enum class Signedness : uint8_t { SIGNED, UNSIGNED, UNKNOWN };

struct LayerFacts {
  std::optional<int64_t> N, K;  // true sizes, when the family and config determine them
  Signedness act = Signedness::UNKNOWN;
};

Family family_of(const std::string& model_class);
std::string family_name(Family f);
KeyStyle default_key_style(Family f);
// nunchaku's model_class for a diffusers `_class_name`, or "" when there is no known mapping.
std::string model_class_for_diffusers(const std::string& class_name);

// `config` is the model config (diffusers config.json object); throws ConfigError when a key the
// family needs is missing or malformed. act for nvfp4 layers is always SIGNED (NUMERICS.md §2:
// unsigned activations exist for int4 only).
LayerFacts layer_facts(Family f, const nlohmann::json& config, const std::string& layer, Precision precision);

}  // namespace svdquant::convert
