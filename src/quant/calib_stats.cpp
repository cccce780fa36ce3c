// CalibrationStats (include/svdquant/quantize.hpp, docs/QUANTIZER.md "Calibration statistics").
#include <algorithm>
#include <cmath>

#include "svdquant/error.hpp"
#include "svdquant/quantize.hpp"

namespace svdquant {
namespace {
constexpr const char* kAbsmax = ".input_absmax";
constexpr const char* kSamples = ".input_samples";
}  // namespace

CalibrationStats CalibrationStats::open(const std::filesystem::path& path) {
  CalibrationStats s;
  s.file_ = SafetensorsFile::open(path);
  return s;
}

bool CalibrationStats::has(const std::string& module) const { return file_.contains(module + kAbsmax); }

std::vector<std::string> CalibrationStats::modules() const {
  std::vector<std::string> out;
  const std::string suffix = kAbsmax;
  for (const auto& n : file_.names())
    if (n.size() > suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0)
      out.push_back(n.substr(0, n.size() - suffix.size()));
  return out;
}

std::vector<float> CalibrationStats::absmax(const std::string& module, int64_t K) const {
  const std::string name = module + kAbsmax;
  if (!file_.contains(name))
    throw ConfigError(file_.path().string() + ": no calibration statistics for layer '" + module + "' (tensor '" +
                      name + "'); record them with python/calib or drop --calib");
  const Tensor t = file_.tensor(name);
  if (t.dim() != 1 || t.size(0) != K)
    throw FormatError(file_.path().string() + ": '" + name + "' has shape " + shape_str(t.shape()) + ", expected [" +
                      std::to_string(K) + "] (the layer's input channels)");
  std::vector<float> v = to_f32_vector(t);
  for (size_t k = 0; k < v.size(); ++k)
    if (!(v[k] >= 0.0f) || !std::isfinite(v[k]))
      throw FormatError(file_.path().string() + ": '" + name + "' value " + std::to_string(k) +
                        " is negative or not finite");
  return v;
}

std::vector<float> CalibrationStats::samples(const std::string& module, int64_t K, int64_t max_rows,
                                             int64_t& rows) const {
  rows = 0;
  const std::string name = module + kSamples;
  if (!file_.contains(name)) return {};
  const Tensor t = file_.tensor(name);
  if (t.dim() != 2 || t.size(1) != K)
    throw FormatError(file_.path().string() + ": '" + name + "' has shape " + shape_str(t.shape()) + ", expected [S, " +
                      std::to_string(K) + "]");
  std::vector<float> v = to_f32_vector(t);
  rows = std::min<int64_t>(t.size(0), max_rows);
  v.resize(size_t(rows * K));
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i])) throw FormatError(file_.path().string() + ": '" + name + "' has a non-finite value");
  return v;
}

}  // namespace svdquant
