// Canonical code packing (docs/FORMAT.md §1): two codes per byte, low nibble = even k.
#include "svdquant/layout_canonical.hpp"

#include "svdquant/error.hpp"

namespace svdquant {

Tensor pack_codes(const Tensor& codes, Precision precision) {
  if (codes.dim() != 2 || codes.dtype() != DType::I8 || codes.size(1) % 2 != 0)
    throw FormatError("pack_codes: expected int8 [N, K] with even K, found " + std::string(dtype_name(codes.dtype())) + " " + shape_str(codes.shape()));
  const Tensor c = codes.is_contiguous() ? codes : codes.clone();
  const int64_t N = c.size(0), K = c.size(1);
  Tensor out = Tensor::zeros(DType::I8, {N, K / 2});
  const int8_t* src = c.data_as<int8_t>();
  auto* dst = out.data_as<uint8_t>();
  const int lo = precision == Precision::INT4 ? -8 : 0, hi = precision == Precision::INT4 ? 7 : 15;
  for (int64_t i = 0; i < N * K; i += 2) {
    if (src[i] < lo || src[i] > hi || src[i + 1] < lo || src[i + 1] > hi)
      throw FormatError("pack_codes: code out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "] at row " +
                        std::to_string(i / K) + ", column " + std::to_string(i % K));
    dst[i / 2] = uint8_t((uint8_t(src[i]) & 0xF) | ((uint8_t(src[i + 1]) & 0xF) << 4));
  }
  return out;
}

Tensor unpack_codes(const Tensor& qweight, Precision precision) {
  if (qweight.dim() != 2 || (qweight.dtype() != DType::I8 && qweight.dtype() != DType::U8))
    throw FormatError("unpack_codes: expected int8 [N, K/2], found " + std::string(dtype_name(qweight.dtype())) + " " + shape_str(qweight.shape()));
  const Tensor q = qweight.is_contiguous() ? qweight : qweight.clone();
  const int64_t N = q.size(0), Kh = q.size(1);
  Tensor out = Tensor::zeros(DType::I8, {N, 2 * Kh});
  const auto* src = q.data_as<uint8_t>();
  auto* dst = out.data_as<int8_t>();
  for (int64_t i = 0; i < N * Kh; ++i) {
    dst[2 * i] = nibble_to_code(src[i] & 0xF, precision);
    dst[2 * i + 1] = nibble_to_code(src[i] >> 4, precision);
  }
  return out;
}

}  // namespace svdquant
