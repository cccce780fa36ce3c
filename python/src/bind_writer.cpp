// write_checkpoint: a canonical diffusers folder from quantized layers (Weights) and other tensors,
// through svdquant::write_checkpoint_folder (atomic: assembled beside and renamed into place).
#include <algorithm>

#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "arrays.hpp"
#include "bindings.hpp"
#include "svdquant/checkpoint.hpp"
#include "svdquant/config.hpp"
#include "svdquant/error.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace svdquant::python {
namespace {

void write(const std::string& folder, const std::vector<const LayerWeights*>& layers, const nb::dict& tensors,
           const std::string& config_json, int rank, const std::string& precision,
           const std::vector<std::string>& act_unsigned_modules, const std::vector<std::string>& modules_to_not_convert) {
  QuantConfig qc;
  qc.rank = rank;
  qc.precision = parse_precision(precision, "precision");
  qc.act_unsigned_modules = act_unsigned_modules;
  qc.modules_to_not_convert = modules_to_not_convert;
  std::vector<std::pair<std::string, Tensor>> all;
  for (const LayerWeights* w : layers) {
    if (w->desc.R != rank)
      throw ConfigError(w->prefix + ": rank " + std::to_string(w->desc.R) + " differs from the checkpoint rank " + std::to_string(rank));
    if (w->desc.precision != qc.precision)
      throw ConfigError(w->prefix + ": precision " + std::string(to_string(w->desc.precision)) + " differs from " + precision);
    if (w->desc.act_unsigned && !std::any_of(act_unsigned_modules.begin(), act_unsigned_modules.end(),
                                             [&](const std::string& p) { return module_matches(p, w->prefix); }))
      qc.act_unsigned_modules.push_back(w->prefix);
    for (auto& t : layer_tensors(*w)) all.push_back(std::move(t));
  }
  for (auto [key, value] : tensors) {
    const std::string name = nb::cast<std::string>(key);
    auto pair = nb::cast<nb::tuple>(value);
    if (pair.size() != 2) throw FormatError("tensors['" + name + "']: expected (safetensors dtype, array)");
    const std::string dt = nb::cast<std::string>(pair[0]);
    const std::optional<DType> want = parse_dtype(dt);
    if (!want) throw FormatError("tensors['" + name + "']: unknown safetensors dtype '" + dt + "'");
    InArray arr = nb::cast<InArray>(pair[1]);
    std::optional<DType> as;
    if (*want == DType::BF16) as = DType::BF16;
    Tensor t = view(arr, "tensors['" + name + "']", as);
    if (*want == DType::F8_E4M3 && t.dtype() == DType::U8) t = Tensor::wrap(t.data(), DType::F8_E4M3, t.shape(), t.device(), nullptr, t.strides());
    if (t.dtype() != *want)
      throw FormatError("tensors['" + name + "']: dtype " + dt + " given, but the array is " + dtype_str(arr.dtype()));
    if (t.device().type != DeviceType::CPU || !t.is_contiguous())
      throw FormatError("tensors['" + name + "']: expected a contiguous host array");
    all.emplace_back(name, t);
  }
  nb::gil_scoped_release release;
  write_checkpoint_folder(folder, config_json, qc, all);
}

}  // namespace

void bind_writer(nb::module_& m) {
  m.def("write_checkpoint", &write, "folder"_a, "layers"_a, "tensors"_a = nb::dict(), nb::kw_only(), "config_json"_a = "{}",
        "rank"_a, "precision"_a, "act_unsigned_modules"_a = std::vector<std::string>{},
        "modules_to_not_convert"_a = std::vector<std::string>{},
        "Writes <folder>/transformer/{config.json, weights} (docs/FORMAT.md §2-§3): the quantized layers "
        "and other tensors {name: (safetensors dtype, host array)} (BF16 as bfloat16 or uint16 bits, F8_E4M3 "
        "as uint8 bits). act_unsigned layers are added to act_unsigned_modules. Refuses a non-empty folder.");
}

}  // namespace svdquant::python
