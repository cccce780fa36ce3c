// quantization_config parsing (docs/FORMAT.md §2). Errors name the key.
#include "svdquant/config.hpp"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "svdquant/error.hpp"

namespace svdquant {

using nlohmann::json;

namespace {

std::vector<std::string> split_dots(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == '.') {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

// Glob match of one component: '*' matches any run of characters.
bool glob_component(const std::string& p, const std::string& s, size_t i = 0, size_t j = 0) {
  while (i < p.size()) {
    if (p[i] == '*') {
      for (size_t k = j; k <= s.size(); ++k)
        if (glob_component(p, s, i + 1, k)) return true;
      return false;
    }
    if (j >= s.size() || p[i] != s[j]) return false;
    ++i;
    ++j;
  }
  return j == s.size();
}

std::vector<std::string> string_list(const json& q, const char* key, const std::string& ctx) {
  std::vector<std::string> out;
  if (!q.contains(key) || q[key].is_null()) return out;
  if (!q[key].is_array()) throw ConfigError(ctx + "." + key + ": expected a list of strings");
  for (const auto& v : q[key]) {
    if (!v.is_string()) throw ConfigError(ctx + "." + key + ": expected a list of strings, found " + v.dump());
    out.push_back(v.get<std::string>());
  }
  return out;
}

QuantConfig parse_flat(const json& q, const std::string& ctx) {
  if (!q.is_object()) throw ConfigError(ctx + ": expected an object");
  QuantConfig c;
  if (!q.contains("quant_method")) throw ConfigError(ctx + ".quant_method: missing (expected \"svdquant\")");
  if (!q["quant_method"].is_string() || q["quant_method"].get<std::string>() != "svdquant")
    throw ConfigError(ctx + ".quant_method: expected \"svdquant\", found " + q["quant_method"].dump());
  if (!q.contains("rank")) throw ConfigError(ctx + ".rank: missing");
  if (!q["rank"].is_number_integer() || q["rank"].get<int64_t>() < 0 || q["rank"].get<int64_t>() > 65536)
    throw ConfigError(ctx + ".rank: expected a non-negative integer, found " + q["rank"].dump());
  c.rank = q["rank"].get<int>();
  if (!q.contains("precision")) throw ConfigError(ctx + ".precision: missing (int4 or nvfp4)");
  if (!q["precision"].is_string()) throw ConfigError(ctx + ".precision: expected a string, found " + q["precision"].dump());
  c.precision = parse_precision(q["precision"].get<std::string>(), ctx + ".precision");
  if (q.contains("act_unsigned") && !q["act_unsigned"].is_null()) {
    if (!q["act_unsigned"].is_boolean()) throw ConfigError(ctx + ".act_unsigned: expected true or false, found " + q["act_unsigned"].dump());
    c.act_unsigned = q["act_unsigned"].get<bool>();
  }
  c.act_unsigned_modules = string_list(q, "act_unsigned_modules", ctx);
  c.modules_to_not_convert = string_list(q, "modules_to_not_convert", ctx);
  if (c.precision == Precision::NVFP4 && (c.act_unsigned || !c.act_unsigned_modules.empty()))
    throw ConfigError(ctx + ".act_unsigned: unsigned activations exist for int4 only");
  return c;
}

}  // namespace

bool module_matches(const std::string& pattern, const std::string& module) {
  if (pattern.empty()) return false;
  auto p = split_dots(pattern), m = split_dots(module);
  for (size_t start = 0; start + p.size() <= m.size(); ++start) {
    bool ok = true;
    for (size_t i = 0; i < p.size() && ok; ++i) ok = glob_component(p[i], m[start + i]);
    if (ok) return true;
  }
  return false;
}

bool QuantConfig::layer_act_unsigned(const std::string& module) const {
  if (act_unsigned) return true;
  for (const auto& p : act_unsigned_modules)
    if (module_matches(p, module)) return true;
  return false;
}

bool QuantConfig::layer_skipped(const std::string& module) const {
  for (const auto& p : modules_to_not_convert)
    if (module_matches(p, module)) return true;
  return false;
}

std::string QuantConfig::to_json() const {
  json q = {{"quant_method", "svdquant"},
            {"rank", rank},
            {"precision", std::string(to_string(precision))},
            {"act_unsigned", act_unsigned},
            {"modules_to_not_convert", modules_to_not_convert}};
  if (!act_unsigned_modules.empty()) q["act_unsigned_modules"] = act_unsigned_modules;
  return q.dump(2);
}

std::optional<QuantConfig> parse_quantization_config(const std::string& text, const std::string& component) {
  json q;
  try {
    q = json::parse(text);
  } catch (const json::parse_error& e) {
    throw ConfigError(std::string("quantization_config: invalid JSON (") + e.what() + ")");
  }
  if (q.is_null()) return std::nullopt;
  if (!q.is_object()) throw ConfigError("quantization_config: expected an object");
  if (q.contains("quant_method") || q.contains("rank") || q.contains("precision")) return parse_flat(q, "quantization_config");
  // Per-component form: {"default": {...}, "<component>": null | {...}}.
  if (q.contains(component)) {
    if (q[component].is_null()) return std::nullopt;
    return parse_flat(q[component], "quantization_config." + component);
  }
  if (q.contains("default")) {
    if (q["default"].is_null()) return std::nullopt;
    return parse_flat(q["default"], "quantization_config.default");
  }
  throw ConfigError("quantization_config: neither a flat config (no 'quant_method') nor a per-component one "
                    "(no 'default' and no '" + component + "')");
}

std::optional<QuantConfig> read_quantization_config_file(const std::string& path, const std::string& component) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  json cfg;
  try {
    cfg = json::parse(ss.str());
  } catch (const json::parse_error& e) {
    throw ConfigError(path + ": invalid JSON (" + e.what() + ")");
  }
  if (!cfg.is_object()) throw ConfigError(path + ": expected a JSON object");
  if (!cfg.contains("quantization_config")) return std::nullopt;
  try {
    return parse_quantization_config(cfg["quantization_config"].dump(), component);
  } catch (const ConfigError& e) {
    throw ConfigError(path + ": " + e.what());
  }
}

}  // namespace svdquant
