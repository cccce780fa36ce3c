// The canonical code packing of docs/FORMAT.md §1: int8 [N, K/2], two 4-bit codes per byte,
// low nibble = even k. Codes are int4 values in [-8, 7] or e2m1 codes (sign<<3 | idx).
#pragma once
#include <cstdint>
#include <span>

#include "svdquant/numerics.hpp"
#include "svdquant/tensor.hpp"

namespace svdquant {

// codes: [N, K] int8 (int4 values or e2m1 codes) -> qweight [N, K/2] int8.
Tensor pack_codes(const Tensor& codes, Precision precision);
// qweight [N, K/2] -> codes [N, K] int8; int4 nibbles are sign-extended to [-8, 7].
Tensor unpack_codes(const Tensor& qweight, Precision precision);

inline int8_t nibble_to_code(uint8_t nib, Precision p) {
  nib &= 0xF;
  return p == Precision::INT4 ? int8_t(int8_t(nib << 4) >> 4) : int8_t(nib);
}

}  // namespace svdquant
