// Helpers shared by the nunchaku layout and convert tests.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>

#include "svdquant/safetensors.hpp"
#include "svdquant/tensor.hpp"

namespace svdquant::testing {

inline std::filesystem::path fixture_path(const std::string& name) {
  return std::filesystem::path(SVDQUANT_TEST_DATA) / (name + ".safetensors");
}

inline const char* const kFixtures[] = {"int4_k256_n256_r32", "int4_unsigned_k512_n128_r32", "nvfp4_k256_n256_r32"};

// Same dtype, same shape, same bytes.
inline ::testing::AssertionResult same_bytes(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype())
    return ::testing::AssertionFailure() << "dtype " << dtype_name(a.dtype()) << " vs " << dtype_name(b.dtype());
  if (a.shape() != b.shape()) return ::testing::AssertionFailure() << "shape " << shape_str(a.shape()) << " vs " << shape_str(b.shape());
  const Tensor ca = a.is_contiguous() ? a : a.clone();
  const Tensor cb = b.is_contiguous() ? b : b.clone();
  const auto* pa = static_cast<const uint8_t*>(ca.data());
  const auto* pb = static_cast<const uint8_t*>(cb.data());
  for (size_t i = 0; i < ca.nbytes(); ++i)
    if (pa[i] != pb[i])
      return ::testing::AssertionFailure() << "first difference at byte " << i << " of " << ca.nbytes() << ": " << int(pa[i]) << " vs "
                                           << int(pb[i]);
  return ::testing::AssertionSuccess();
}

// A host tensor of random bytes; `avoid16` (if nonzero) is never produced as a 16-bit element and
// `avoid8` never as a byte, so padding fills can be counted afterwards.
inline Tensor random_tensor(DType dtype, Shape shape, uint32_t seed, uint16_t avoid16 = 0, int avoid8 = -1) {
  Tensor t = Tensor::zeros(dtype, std::move(shape));
  std::mt19937 rng(seed);
  auto* p = static_cast<uint8_t*>(t.data());
  if (dtype_size(dtype) == 2) {
    auto* q = reinterpret_cast<uint16_t*>(p);
    for (int64_t i = 0; i < t.numel(); ++i) {
      uint16_t v;
      do v = uint16_t(rng() & 0x7FFF);  // finite-ish, positive
      while (avoid16 != 0 && v == avoid16);
      q[i] = v;
    }
  } else {
    for (size_t i = 0; i < t.nbytes(); ++i) {
      uint8_t v;
      do v = uint8_t(rng());
      while (avoid8 >= 0 && v == uint8_t(avoid8));
      p[i] = v;
    }
  }
  return t;
}

template <class E>
int64_t count_equal(const Tensor& t, E value) {
  int64_t c = 0;
  const auto* p = static_cast<const E*>(t.data());
  for (int64_t i = 0; i < t.numel(); ++i) c += p[i] == value;
  return c;
}

}  // namespace svdquant::testing
