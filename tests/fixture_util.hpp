// Test helpers: load a nunchaku fixture (tests/data) as a canonical LayerWeights, error metrics.
#pragma once
#include <array>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "svdquant/checkpoint.hpp"
#include "svdquant/layout_canonical.hpp"
#include "svdquant/safetensors.hpp"

namespace svdquant::test {

inline std::filesystem::path data_dir() { return SVDQUANT_TEST_DATA; }

inline const char* kFixtures[] = {"int4_k256_n256_r32", "int4_unsigned_k512_n128_r32", "nvfp4_k256_n256_r32"};

struct Fixture {
  SafetensorsFile file;
  nlohmann::json meta;  // the `case` metadata
  LayerWeights layer;   // canonical tensors, qweight packed
};

inline Fixture load_fixture(const std::string& name) {
  Fixture f{SafetensorsFile::open(data_dir() / (name + ".safetensors")), {}, {}};
  f.meta = nlohmann::json::parse(f.file.metadata().at("case"));
  const Precision p = parse_precision(f.meta["precision"].get<std::string>());
  LayerWeights& w = f.layer;
  w.prefix = name;
  w.qweight = pack_codes(f.file.tensor("canonical.codes"), p);
  w.wscales = f.file.tensor("canonical.wscales");
  w.smooth = f.file.tensor("canonical.smooth");
  w.proj_down = f.file.tensor("canonical.proj_down");
  w.proj_up = f.file.tensor("canonical.proj_up");
  w.bias = f.file.tensor("canonical.bias");
  w.wcscales = f.file.tensor("canonical.wcscales");
  w.wtscale = f.file.tensor("canonical.wtscale");
  w.validate(p, f.meta["act_unsigned"].get<bool>());
  return f;
}

// ||a - ref|| / ||ref|| over any two floating host tensors of equal size.
inline double rel_l2(const Tensor& a, const Tensor& ref) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    double x = element_as_double(a, i), r = element_as_double(ref, i);
    num += (x - r) * (x - r);
    den += r * r;
  }
  return std::sqrt(num / den);
}

// For two T tensors (bf16/fp16 bits): how many elements are equal, 1 ulp apart, further apart.
inline std::array<int64_t, 3> ulp_diff_histogram(const Tensor& a, const Tensor& b) {
  std::array<int64_t, 3> h{0, 0, 0};
  auto ordered = [](uint16_t v) { return (v & 0x8000) ? -int32_t(v & 0x7FFF) : int32_t(v); };
  for (int64_t i = 0; i < a.numel(); ++i) {
    const int32_t d = std::abs(ordered(a.data_as<uint16_t>()[i]) - ordered(b.data_as<uint16_t>()[i]));
    ++h[size_t(std::min(d, 2))];
  }
  return h;
}

}  // namespace svdquant::test
