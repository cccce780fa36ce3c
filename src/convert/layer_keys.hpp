// Tensor names inside one quantized layer, in both spellings (private to src/convert).
#pragma once
#include <map>
#include <string>
#include <vector>

namespace svdquant::convert {

// Canonical suffix -> every spelling accepted in a file (canonical first, then nunchaku's).
inline const std::map<std::string, std::vector<std::string>>& layer_suffixes() {
  static const std::map<std::string, std::vector<std::string>> m = {
      {"qweight", {"qweight"}},
      {"wscales", {"wscales"}},
      {"bias", {"bias"}},
      {"wcscales", {"wcscales"}},
      {"wtscale", {"wtscale"}},
      {"smooth_factor", {"smooth_factor", "smooth"}},
      {"smooth_factor_orig", {"smooth_factor_orig", "smooth_orig"}},
      {"proj_down", {"proj_down", "lora_down"}},
      {"proj_up", {"proj_up", "lora_up"}},
  };
  return m;
}

// The canonical suffix for a spelling, or "" when the spelling belongs to no W4A4 layer tensor.
inline std::string canonical_suffix(const std::string& spelling) {
  for (const auto& [canon, spellings] : layer_suffixes())
    for (const auto& s : spellings)
      if (s == spelling) return canon;
  return "";
}

// Splits "a.b.c" into ("a.b", "c"); a name without a dot gives ("", name).
inline std::pair<std::string, std::string> split_last(const std::string& name) {
  const auto pos = name.rfind('.');
  if (pos == std::string::npos) return {"", name};
  return {name.substr(0, pos), name.substr(pos + 1)};
}

}  // namespace svdquant::convert
