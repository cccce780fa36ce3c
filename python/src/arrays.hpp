// Arrays in and out of the extension through DLPack (nanobind's nb::ndarray): numpy arrays, torch
// tensors (CPU or CUDA) and anything else with __dlpack__, as svdquant::Tensor views without a copy.
// Outputs are numpy arrays; numpy has no bfloat16 or float8, so those come out as their bits
// (uint16, uint8), documented where they appear.
#pragma once
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <optional>
#include <string>

#include "svdquant/tensor.hpp"

namespace svdquant::python {

using InArray = nanobind::ndarray<nanobind::ro>;  // any dtype, device, layout; never written
using OutArray = nanobind::ndarray<>;             // written in place

// "bfloat16", "float16", "uint16", ... (numpy/torch spelling) for messages.
std::string dtype_str(nanobind::dlpack::dtype d);
std::string device_str(int device_type, int device_id);  // "cpu", "cuda:0", ...

// The layer dtype T named by `s` ("bfloat16" or "float16"); throws ConfigError naming `what`.
DType parse_half_dtype(const std::string& s, const char* what);
std::string half_dtype_str(DType t);  // BF16 -> "bfloat16", F16 -> "float16"

// A Tensor viewing the array's memory (strides kept). The array's dtype must be one svdquant knows;
// `as` reinterprets a 16-bit array (uint16/int16 bits) as BF16 or F16. Throws FormatError naming `what`.
Tensor view(const InArray& a, const std::string& what, std::optional<DType> as = std::nullopt);
Tensor view_out(const OutArray& a, const std::string& what, std::optional<DType> as = std::nullopt);

// A numpy array sharing t's memory (a host tensor) and keeping it alive. Read-only unless
// `writable`. BF16 comes out as uint16 bits, F8_E4M3 as uint8 bits.
nanobind::object to_numpy(const Tensor& t, bool writable = false);

// A contiguous float32 vector of a host floating-point array of `shape`, e.g. a weight [N, K].
std::vector<float> to_f32(const InArray& a, const std::string& what, const Shape& shape);

}  // namespace svdquant::python
