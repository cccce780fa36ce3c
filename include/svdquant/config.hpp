// quantization_config of a canonical checkpoint (docs/FORMAT.md §2), in its flat form
//   {"quant_method": "svdquant", "rank": 32, "precision": "int4", "act_unsigned": false,
//    "act_unsigned_modules": [...], "modules_to_not_convert": [...]}
// or the per-component form {"default": {...}, "<component>": null | {...}}.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "svdquant/numerics.hpp"

namespace svdquant {

struct QuantConfig {
  int rank = 0;
  Precision precision = Precision::INT4;
  // act_unsigned applies to every quantized layer; act_unsigned_modules names single layers.
  bool act_unsigned = false;
  std::vector<std::string> act_unsigned_modules;
  std::vector<std::string> modules_to_not_convert;

  bool layer_act_unsigned(const std::string& module) const;
  bool layer_skipped(const std::string& module) const;
  // The flat JSON form (keys sorted, 2-space indent).
  std::string to_json() const;
};

// Module-name matching used by modules_to_not_convert and act_unsigned_modules (FORMAT.md §2):
// a pattern matches a module if it equals the name, is a dotted prefix of it ("a.b" matches
// "a.b.c"), or occurs as whole dotted components inside it ("ff" matches "blocks.0.ff.net.2");
// `*` in a pattern matches any run of characters within one component.
bool module_matches(const std::string& pattern, const std::string& module);

// Parses a quantization_config JSON object. For the per-component form, `component` selects the
// entry ("default" when the component is absent). Returns nullopt when the selected entry is null
// (the component is not quantized). Throws ConfigError naming the offending key.
std::optional<QuantConfig> parse_quantization_config(const std::string& json_text,
                                                     const std::string& component = "transformer");

// Reads a diffusers config.json and returns its quantization_config (nullopt if it has none or the
// component is not quantized). Throws ConfigError on malformed JSON, naming the file.
std::optional<QuantConfig> read_quantization_config_file(const std::string& path,
                                                         const std::string& component = "transformer");

}  // namespace svdquant
