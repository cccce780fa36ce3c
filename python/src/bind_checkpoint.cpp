// svdquant.Checkpoint (a canonical checkpoint: folder or .safetensors file) and svdquant.Weights
// (one quantized layer's canonical tensors, from a checkpoint or from the quantizer).
#include "bindings.hpp"

#include <nanobind/stl/optional.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "arrays.hpp"
#include "svdquant/checkpoint.hpp"
#include "svdquant/config.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace svdquant::python {

nb::dict quant_config_dict(const QuantConfig& q) {
  nb::dict d;
  d["quant_method"] = "svdquant";
  d["rank"] = q.rank;
  d["precision"] = std::string(to_string(q.precision));
  d["act_unsigned"] = q.act_unsigned;
  d["act_unsigned_modules"] = q.act_unsigned_modules;
  d["modules_to_not_convert"] = q.modules_to_not_convert;
  return d;
}

void bind_checkpoint(nb::module_& m) {
  nb::class_<LayerWeights>(m, "Weights",
                           "One quantized layer's canonical tensors (docs/FORMAT.md §1), validated. From "
                           "Checkpoint.layer() or quantize_linear(); give it to Layer() to run it.")
      .def_ro("prefix", &LayerWeights::prefix, "The module name, e.g. 'transformer_blocks.0.attn.to_q'.")
      .def_prop_ro("in_features", [](const LayerWeights& w) { return w.desc.K; })
      .def_prop_ro("out_features", [](const LayerWeights& w) { return w.desc.N; })
      .def_prop_ro("rank", [](const LayerWeights& w) { return w.desc.R; })
      .def_prop_ro("precision", [](const LayerWeights& w) { return std::string(to_string(w.desc.precision)); })
      .def_prop_ro("dtype", [](const LayerWeights& w) { return w.desc.dtype == HalfKind::BF16 ? "bfloat16" : "float16"; },
                   "The layer dtype T: 'bfloat16' or 'float16'.")
      .def_prop_ro("act_unsigned", [](const LayerWeights& w) { return w.desc.act_unsigned; })
      .def_prop_ro("has_bias", [](const LayerWeights& w) { return w.desc.has_bias; })
      .def(
          "tensors",
          [](const LayerWeights& w) {
            nb::dict d;
            for (const auto& [name, t] : layer_tensors(w)) d[nb::str(name.c_str())] = nb::make_tuple(std::string(dtype_name(t.dtype())), to_numpy(t));
            return d;
          },
          "The canonical tensors {'<prefix>.qweight': (safetensors dtype, numpy array), ...}; BF16 tensors "
          "are given as their uint16 bits, F8_E4M3 as uint8 bits (numpy has neither dtype).")
      .def("__repr__", [](const LayerWeights& w) {
        return "<svdquant.Weights " + w.prefix + ": " + std::string(to_string(w.desc.precision)) + " " +
               (w.desc.dtype == HalfKind::BF16 ? "bfloat16" : "float16") + " N=" + std::to_string(w.desc.N) +
               " K=" + std::to_string(w.desc.K) + " R=" + std::to_string(w.desc.R) +
               (w.desc.act_unsigned ? " act_unsigned" : "") + ">";
      });

  nb::class_<Checkpoint>(m, "Checkpoint",
                         "A canonical SVDQuant checkpoint: a diffusers folder (root with transformer/, or the "
                         "component folder), or one .safetensors file (docs/FORMAT.md §2). Tensors are memory-mapped.")
      .def(
          "__init__",
          [](Checkpoint* self, const std::string& path, const std::string& component) {
            nb::gil_scoped_release release;
            new (self) Checkpoint(Checkpoint::open(path, component));
          },
          "path"_a, "component"_a = "transformer")
      .def_prop_ro("path", [](const Checkpoint& c) { return c.path().string(); })
      .def_prop_ro("config_json", &Checkpoint::config_json, "The model's config.json text ('' if there is none).")
      .def_prop_ro(
          "quantization_config",
          [](const Checkpoint& c) -> nb::object {
            if (!c.quant_config()) return nb::none();
            return quant_config_dict(*c.quant_config());
          },
          "The parsed quantization_config as a dict, or None.")
      .def("quantized_layers", &Checkpoint::quantized_layers, "Prefixes of every quantized layer (with <prefix>.qweight), sorted.")
      .def("tensor_names", &Checkpoint::tensor_names)
      .def("has_tensor", &Checkpoint::has_tensor, "name"_a)
      .def(
          "tensor_dtype", [](const Checkpoint& c, const std::string& name) { return std::string(dtype_name(c.info(name).dtype)); },
          "name"_a, "The safetensors dtype ('BF16', 'F16', 'F32', 'I8', 'F8_E4M3', ...).")
      .def(
          "tensor", [](const Checkpoint& c, const std::string& name) { return to_numpy(c.tensor(name)); }, "name"_a,
          "A read-only numpy view of the mapped tensor; BF16 as uint16 bits, F8_E4M3 as uint8 bits "
          "(see tensor_dtype).")
      .def(
          "layer",
          [](const Checkpoint& c, const std::string& prefix) {
            nb::gil_scoped_release release;
            return c.layer(prefix);
          },
          "prefix"_a, "Loads and validates one quantized layer.")
      .def("__repr__", [](const Checkpoint& c) {
        return "<svdquant.Checkpoint " + c.path().string() + ": " + std::to_string(c.quantized_layers().size()) + " quantized layers>";
      });
}

}  // namespace svdquant::python
