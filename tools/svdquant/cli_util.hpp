// Small helpers shared by the CLI subcommands.
#pragma once
#include <cstdint>
#include <string>

#include "svdquant/tensor.hpp"

namespace svdquant::cli {

std::string human_bytes(uint64_t n);
// Relative L2 error ||a - b|| / ||b|| over two host tensors of floating dtypes (same numel).
double rel_l2(const Tensor& a, const Tensor& b);

}  // namespace svdquant::cli
