// The parts of the svdquant._C module, one file each.
#pragma once
#include <nanobind/nanobind.h>

namespace svdquant {
struct QuantConfig;
}

namespace svdquant::python {

void bind_checkpoint(nanobind::module_& m);  // Checkpoint, Weights
void bind_layer(nanobind::module_& m);       // Layer
void bind_quantize(nanobind::module_& m);    // quantize_linear, Calibration, family_defaults, module_matches
void bind_writer(nanobind::module_& m);      // write_checkpoint

nanobind::dict quant_config_dict(const QuantConfig& q);

}  // namespace svdquant::python
