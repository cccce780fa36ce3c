// Model-family facts for nunchaku checkpoints (see nunchaku_models.hpp and docs/FORMAT.md
// "Nunchaku interop"). A layer that no rule covers gets no sizes and UNKNOWN signedness: callers
// keep its padding (with a warning) and refuse to guess its act_unsigned.
#include "nunchaku_models.hpp"

#include <map>
#include <regex>

#include "svdquant/error.hpp"

namespace svdquant::convert {

using nlohmann::json;

namespace {

int64_t positive_int(const json& cfg, const char* key, const std::string& family) {
  if (!cfg.is_object() || !cfg.contains(key))
    throw ConfigError("model config: '" + std::string(key) + "' is missing (needed to size " + family + " layers)");
  const json& v = cfg[key];
  if (!v.is_number_integer() || v.get<int64_t>() < 1)
    throw ConfigError("model config: '" + std::string(key) + "' must be a positive integer, found " + v.dump());
  return v.get<int64_t>();
}

struct Rule {
  int64_t n_mult, k_mult;  // in units of the hidden size h or the MLP size (4h): see `mlp` flags
  bool n_mlp, k_mlp;
  bool gelu_fc2;           // consumes GELU outputs: unsigned for int4
};

// Split "<blocks>.<i>.<local>" into blocks and local; false if the name has another shape.
bool split_block(const std::string& layer, std::string& blocks, std::string& local) {
  static const std::regex re(R"(^([A-Za-z_]+)\.(\d+)\.(.+)$)");
  std::smatch m;
  if (!std::regex_match(layer, m, re)) return false;
  blocks = m[1];
  local = m[3];
  return true;
}

}  // namespace

Family family_of(const std::string& model_class) {
  if (model_class == "NunchakuFluxTransformer2dModel") return Family::FLUX;
  if (model_class == "NunchakuQwenImageTransformer2DModel") return Family::QWEN_IMAGE;
  return Family::UNKNOWN;
}

std::string family_name(Family f) {
  switch (f) {
    case Family::FLUX: return "FLUX";
    case Family::QWEN_IMAGE: return "Qwen-Image";
    default: return "unknown";
  }
}

KeyStyle default_key_style(Family f) { return f == Family::FLUX ? KeyStyle::LORA : KeyStyle::PROJ; }

std::string model_class_for_diffusers(const std::string& class_name) {
  if (class_name == "FluxTransformer2DModel") return "NunchakuFluxTransformer2dModel";
  if (class_name == "QwenImageTransformer2DModel") return "NunchakuQwenImageTransformer2DModel";
  return "";
}

LayerFacts layer_facts(Family f, const json& config, const std::string& layer, Precision precision) {
  LayerFacts out;
  if (precision == Precision::NVFP4) out.act = Signedness::SIGNED;  // unsigned activations are int4 only
  std::string blocks, local;
  if (f == Family::UNKNOWN || !split_block(layer, blocks, local)) return out;
  // FLUX (nunchaku's C++ model, fused names) and Qwen-Image (diffusers names): the MLP is a
  // GELU(tanh) FeedForward of width 4h, so its second linear sees GELU outputs (>= -0.17).
  static const std::map<std::string, Rule> flux_double = {
      {"qkv_proj", {3, 1, false, false, false}},         {"qkv_proj_context", {3, 1, false, false, false}},
      {"out_proj", {1, 1, false, false, false}},         {"out_proj_context", {1, 1, false, false, false}},
      {"mlp_fc1", {1, 1, true, false, false}},           {"mlp_context_fc1", {1, 1, true, false, false}},
      {"mlp_fc2", {1, 1, false, true, true}},            {"mlp_context_fc2", {1, 1, false, true, true}}};
  static const std::map<std::string, Rule> flux_single = {{"qkv_proj", {3, 1, false, false, false}},
                                                          {"out_proj", {1, 1, false, false, false}},
                                                          {"mlp_fc1", {1, 1, true, false, false}},
                                                          {"mlp_fc2", {1, 1, false, true, true}}};
  static const std::map<std::string, Rule> qwen = {
      {"attn.to_qkv", {3, 1, false, false, false}},      {"attn.add_qkv_proj", {3, 1, false, false, false}},
      {"attn.to_out.0", {1, 1, false, false, false}},    {"attn.to_add_out", {1, 1, false, false, false}},
      {"img_mlp.net.0.proj", {1, 1, true, false, false}}, {"txt_mlp.net.0.proj", {1, 1, true, false, false}},
      {"img_mlp.net.2", {1, 1, false, true, true}},       {"txt_mlp.net.2", {1, 1, false, true, true}}};
  const std::map<std::string, Rule>* rules = nullptr;
  if (f == Family::FLUX && blocks == "transformer_blocks") rules = &flux_double;
  if (f == Family::FLUX && blocks == "single_transformer_blocks") rules = &flux_single;
  if (f == Family::QWEN_IMAGE && blocks == "transformer_blocks") rules = &qwen;
  if (!rules) return out;
  auto it = rules->find(local);
  if (it == rules->end()) return out;
  const std::string fam = family_name(f);
  const int64_t h = positive_int(config, "num_attention_heads", fam) * positive_int(config, "attention_head_dim", fam);
  const int64_t mlp = 4 * h;
  const Rule& r = it->second;
  out.N = r.n_mult * (r.n_mlp ? mlp : h);
  out.K = r.k_mult * (r.k_mlp ? mlp : h);
  out.act = (r.gelu_fc2 && precision == Precision::INT4) ? Signedness::UNSIGNED : Signedness::SIGNED;
  return out;
}

}  // namespace svdquant::convert
