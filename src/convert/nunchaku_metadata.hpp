// nunchaku's `quantization_config` file metadata (private to src/convert), e.g.
//   {"method": "svdquant", "weight": {"dtype": "int4", "scale_dtype": null, "group_size": 64},
//    "activation": {"dtype": "int4", "scale_dtype": null, "group_size": 64}, "rank": 32}
// nvfp4 uses dtype "fp4_e2m1_all", group_size 16, and fp8_e4m3_nan scales.
#pragma once
#include <string>

#include "svdquant/numerics.hpp"

namespace svdquant::convert {

// The weight precision named by a nunchaku quantization_config; throws ConfigError naming `where`
// on malformed JSON, a missing weight.dtype, an unknown precision or a group size that does not
// match it.
Precision parse_nunchaku_precision(const std::string& json_text, const std::string& where);

// The quantization_config nunchaku writes for this precision and rank.
std::string make_nunchaku_quantization_config(Precision p, int rank);

}  // namespace svdquant::convert
