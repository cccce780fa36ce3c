// Per-family default 16-bit modules and act_unsigned layers (docs/QUANTIZER.md "Which layers":
// keep this file and that table in sync).
#include <nlohmann/json.hpp>

#include "svdquant/error.hpp"
#include "svdquant/quantize.hpp"

namespace svdquant {

FamilyDefaults family_defaults(const std::string& config_json) {
  FamilyDefaults d;
  if (config_json.empty()) return d;
  nlohmann::json cfg;
  try {
    cfg = nlohmann::json::parse(config_json);
  } catch (const nlohmann::json::parse_error& e) {
    throw ConfigError(std::string("model config.json: invalid JSON (") + e.what() + ")");
  }
  const std::string cls = cfg.is_object() && cfg.contains("_class_name") && cfg["_class_name"].is_string()
                              ? cfg["_class_name"].get<std::string>()
                              : "";
  if (cls == "FluxTransformer2DModel") {
    d.family = "flux";
    d.skip = {"x_embedder", "context_embedder", "time_text_embed", "norm_out", "norm1.linear", "norm1_context.linear",
              "norm.linear"};
    d.skip_top_level = {"proj_out"};
    d.act_unsigned = {"ff.net.2", "ff_context.net.2"};
  } else if (cls == "SD3Transformer2DModel") {
    d.family = "sd3";
    d.skip = {"pos_embed", "context_embedder", "time_text_embed", "norm_out", "norm1.linear", "norm1_context.linear"};
    d.skip_top_level = {"proj_out"};
    d.act_unsigned = {"ff.net.2", "ff_context.net.2"};
  } else if (cls == "QwenImageTransformer2DModel") {
    d.family = "qwen-image";
    d.skip = {"img_in", "txt_in", "time_text_embed", "norm_out", "img_mod", "txt_mod"};
    d.skip_top_level = {"proj_out"};
    d.act_unsigned = {"img_mlp.net.2", "txt_mlp.net.2"};
  } else if (cls == "ZImageTransformer2DModel") {
    d.family = "z-image";
    d.skip = {"t_embedder", "cap_embedder", "all_x_embedder", "all_final_layer", "adaLN_modulation"};
    d.act_unsigned = {};  // SwiGLU feed-forward: no GELU inputs
  }
  return d;
}

}  // namespace svdquant
