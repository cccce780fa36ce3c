#include "nunchaku_metadata.hpp"

#include <nlohmann/json.hpp>

#include "svdquant/error.hpp"

namespace svdquant::convert {

using nlohmann::json;

Precision parse_nunchaku_precision(const std::string& text, const std::string& where) {
  json q;
  try {
    q = json::parse(text);
  } catch (const json::parse_error& e) {
    throw ConfigError(where + ": invalid JSON (" + e.what() + ")");
  }
  if (!q.is_object() || !q.contains("weight") || !q["weight"].is_object() || !q["weight"].contains("dtype") ||
      !q["weight"]["dtype"].is_string())
    throw ConfigError(where + ": weight.dtype is missing (expected \"int4\" or \"fp4_e2m1_all\")");
  const std::string dtype = q["weight"]["dtype"].get<std::string>();
  Precision p;
  if (dtype == "int4")
    p = Precision::INT4;
  else if (dtype == "fp4_e2m1_all")
    p = Precision::NVFP4;
  else
    throw ConfigError(where + ": unknown precision weight.dtype = \"" + dtype + "\" (expected \"int4\" or \"fp4_e2m1_all\")");
  const json& w = q["weight"];
  if (w.contains("group_size") && !w["group_size"].is_null() &&
      (!w["group_size"].is_number_integer() || w["group_size"].get<int64_t>() != group_size(p)))
    throw ConfigError(where + ": weight.group_size = " + w["group_size"].dump() + " does not match " + dtype + " (expected " +
                      std::to_string(group_size(p)) + ")");
  return p;
}

std::string make_nunchaku_quantization_config(Precision p, int rank) {
  json q;
  q["method"] = "svdquant";
  if (p == Precision::INT4) {
    q["weight"] = {{"dtype", "int4"}, {"scale_dtype", nullptr}, {"group_size", 64}};
    q["activation"] = {{"dtype", "int4"}, {"scale_dtype", nullptr}, {"group_size", 64}};
  } else {
    q["weight"] = {{"dtype", "fp4_e2m1_all"}, {"scale_dtype", json::array({nullptr, "fp8_e4m3_nan"})}, {"group_size", 16}};
    q["activation"] = {{"dtype", "fp4_e2m1_all"}, {"scale_dtype", "fp8_e4m3_nan"}, {"group_size", 16}};
  }
  q["rank"] = rank;
  return q.dump();
}

}  // namespace svdquant::convert
