// Nunchaku layouts (docs/FORMAT.md "Nunchaku interop"): the fixtures are the authority. For every
// fixture, pack(canonical.*) equals nunchaku.* byte for byte and unpack(nunchaku.*) equals
// canonical.* exactly; random tensors round-trip at padded shapes with nunchaku's padding fills.
#include <gtest/gtest.h>

#include "svdquant/error.hpp"
#include "svdquant/layout_canonical.hpp"
#include "svdquant/layout_nunchaku.hpp"
#include "svdquant/safetensors.hpp"
#include "test_util.hpp"

namespace svdquant {
namespace {

using namespace svdquant::nunchaku;
using svdquant::testing::count_equal;
using svdquant::testing::random_tensor;
using svdquant::testing::same_bytes;

class FixtureLayout : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override { f_ = SafetensorsFile::open(svdquant::testing::fixture_path(GetParam())); }
  Tensor t(const std::string& name) const { return f_.tensor(name); }
  Precision precision() const { return f_.contains("nunchaku.wtscale") ? Precision::NVFP4 : Precision::INT4; }
  SafetensorsFile f_;
};

TEST_P(FixtureLayout, QweightBothDirections) {
  const Tensor codes = t("canonical.codes");
  const Tensor canonical = pack_codes(codes, precision());
  const Tensor packed = t("nunchaku.qweight");
  const int64_t N = codes.size(0), K = codes.size(1);
  EXPECT_TRUE(same_bytes(pack_qweight(canonical, packed.size(0), packed.size(1) * 2), packed));
  const Tensor back = unpack_qweight(packed, N, K);
  EXPECT_TRUE(same_bytes(back, canonical));
  EXPECT_TRUE(same_bytes(unpack_codes(back, precision()), codes));
}

TEST_P(FixtureLayout, WscalesBothDirections) {
  const Tensor canonical = t("canonical.wscales"), packed = t("nunchaku.wscales");
  const int64_t G = canonical.size(0), N = canonical.size(1);
  if (precision() == Precision::INT4) {
    EXPECT_TRUE(same_bytes(pack_wscales_int4(canonical, packed.size(1), packed.size(0)), packed));
    EXPECT_TRUE(same_bytes(unpack_wscales_int4(packed, N, G), canonical));
  } else {
    EXPECT_TRUE(same_bytes(pack_wscales_nvfp4(canonical, packed.size(1), packed.size(0) * 16), packed));
    EXPECT_TRUE(same_bytes(unpack_wscales_nvfp4(packed, N, G), canonical));
    EXPECT_TRUE(same_bytes(t("nunchaku.wtscale"), t("canonical.wtscale")));  // a scalar: no layout
  }
}

TEST_P(FixtureLayout, VectorsBothDirections) {
  for (const auto& [canon, nun] : {std::pair{"canonical.bias", "nunchaku.bias"}, std::pair{"canonical.smooth", "nunchaku.smooth"},
                                   std::pair{"canonical.smooth", "nunchaku.smooth_orig"}}) {
    SCOPED_TRACE(nun);
    const Tensor c = t(canon), p = t(nun);
    EXPECT_TRUE(same_bytes(pack_vector(c, p.size(0), nun), p));
    EXPECT_TRUE(same_bytes(unpack_vector(p, c.size(0), nun), c));
  }
}

TEST_P(FixtureLayout, LowRankBothDirections) {
  const Tensor down = t("canonical.proj_down"), up = t("canonical.proj_up");
  const Tensor pdown = t("nunchaku.lora_down"), pup = t("nunchaku.lora_up");
  EXPECT_TRUE(same_bytes(pack_lora_down(down, pdown.size(0)), pdown));
  EXPECT_TRUE(same_bytes(pack_lora_up(up, pup.size(0)), pup));
  EXPECT_TRUE(same_bytes(unpack_lora_down(pdown, down.size(0)), down));
  EXPECT_TRUE(same_bytes(unpack_lora_up(pup, up.size(0)), up));
  // The fragment order is not the identity (otherwise this test would prove nothing).
  EXPECT_FALSE(same_bytes(pdown, down));
  EXPECT_FALSE(same_bytes(pup, up));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, FixtureLayout, ::testing::ValuesIn(svdquant::testing::kFixtures));

// ---------------------------------------------------------------- padded shapes, random data

constexpr int64_t N = 200, K = 320, R = 48;  // padded: Np = 256, Kp = 384

TEST(NunchakuPadding, PaddedSizes) {
  EXPECT_EQ(padded_n(N), 256);
  EXPECT_EQ(padded_k(K), 384);
  EXPECT_EQ(padded_scale_rows(Precision::INT4, K), 6);    // 5 groups of 64, padded to an even count
  EXPECT_EQ(padded_scale_rows(Precision::NVFP4, K), 20);  // 20 groups of 16 are already a multiple of 4
  EXPECT_EQ(padded_scale_rows(Precision::NVFP4, 352), 24);
  EXPECT_EQ(padded_n(3072), 3072);
}

TEST(NunchakuPadding, QweightZeroPaddedRoundTrip) {
  const Tensor q = random_tensor(DType::I8, {N, K / 2}, 1, 0, /*avoid8=*/0);
  const Tensor p = pack_qweight(q, 256, 384);
  ASSERT_EQ(p.shape(), (Shape{256, 192}));
  // Every canonical byte lands somewhere (none is zero), every other byte is zero padding.
  EXPECT_EQ(count_equal<uint8_t>(p, 0), 256 * 192 - N * K / 2);
  EXPECT_TRUE(same_bytes(unpack_qweight(p, N, K), q));
  // The padded codes are the trailing columns and rows of the unpacked padded tensor.
  const Tensor full = unpack_qweight(p, 256, 384);
  for (int64_t n = 0; n < 256; ++n)
    for (int64_t b = 0; b < 192; ++b) {
      const uint8_t v = full.data_as<uint8_t>()[n * 192 + b];
      if (n < N && b < K / 2)
        ASSERT_EQ(v, q.data_as<uint8_t>()[n * (K / 2) + b]) << n << "," << b;
      else
        ASSERT_EQ(v, 0) << n << "," << b;
    }
}

TEST(NunchakuPadding, Int4WscalesOnePaddedRoundTrip) {
  for (DType T : {DType::BF16, DType::F16}) {
    const uint16_t one = T == DType::BF16 ? 0x3F80 : 0x3C00;
    const Tensor s = random_tensor(T, {K / 64, N}, 2, one);
    const Tensor p = pack_wscales_int4(s, 256, padded_scale_rows(Precision::INT4, K));
    ASSERT_EQ(p.shape(), (Shape{6, 256}));
    EXPECT_EQ(count_equal<uint16_t>(p, one), 6 * 256 - (K / 64) * N);
    EXPECT_TRUE(same_bytes(unpack_wscales_int4(p, N, K / 64), s));
  }
}

TEST(NunchakuPadding, Nvfp4WscalesOnePaddedRoundTrip) {
  for (int64_t k : {K, int64_t(352)}) {
    const Tensor s = random_tensor(DType::F8_E4M3, {k / 16, N}, 3, 0, /*avoid8=*/0x38);
    const int64_t rows = padded_scale_rows(Precision::NVFP4, k);
    const Tensor p = pack_wscales_nvfp4(s, 256, rows * 16);
    ASSERT_EQ(p.shape(), (Shape{rows, 256}));
    EXPECT_EQ(count_equal<uint8_t>(p, 0x38), rows * 256 - (k / 16) * N);
    EXPECT_TRUE(same_bytes(unpack_wscales_nvfp4(p, N, k / 16), s));
  }
}

TEST(NunchakuPadding, VectorsOnePaddedRoundTrip) {
  for (int64_t len : {N, K}) {
    const Tensor v = random_tensor(DType::BF16, {len}, 4, 0x3F80);
    const int64_t lp = padded_n(len);
    const Tensor p = pack_vector(v, lp, "bias");
    EXPECT_EQ(count_equal<uint16_t>(p, 0x3F80), lp - len);
    EXPECT_TRUE(same_bytes(unpack_vector(p, len, "bias"), v));
  }
}

TEST(NunchakuPadding, LowRankZeroPaddedRoundTrip) {
  const Tensor down = random_tensor(DType::F16, {K, R}, 5, 0);
  const Tensor up = random_tensor(DType::BF16, {N, R}, 6, 0);
  // random_tensor with avoid16 = 0 may produce zeros; make them nonzero so padding can be counted.
  for (Tensor t : {down, up}) {
    auto* q = t.data_as<uint16_t>();
    for (int64_t i = 0; i < t.numel(); ++i) q[i] = q[i] ? q[i] : 1;
  }
  const Tensor pd = pack_lora_down(down, 384), pu = pack_lora_up(up, 256);
  ASSERT_EQ(pd.shape(), (Shape{384, R}));
  ASSERT_EQ(pu.shape(), (Shape{256, R}));
  EXPECT_EQ(count_equal<uint16_t>(pd, 0), (384 - K) * R);
  EXPECT_EQ(count_equal<uint16_t>(pu, 0), (256 - N) * R);
  EXPECT_TRUE(same_bytes(unpack_lora_down(pd, K), down));
  EXPECT_TRUE(same_bytes(unpack_lora_up(pu, N), up));
  // Padding rows of the canonical tensor are the trailing rows of the packed one (tiles of 16 rows).
  const Tensor tail = unpack_lora_down(pd, 384);
  EXPECT_EQ(count_equal<uint16_t>(tail, 0), (384 - K) * R);
  for (int64_t i = K * R; i < 384 * R; ++i) ASSERT_EQ(tail.data_as<uint16_t>()[i], 0) << i;
}

// ---------------------------------------------------------------- bad input

TEST(NunchakuLayoutErrors, NamesTheTensor) {
  const Tensor q = Tensor::zeros(DType::I8, {N, K / 2});
  auto expect_error = [](auto fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "no error";
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error([&] { pack_qweight(q, 200, 384, "blocks.0.qweight"); }, "blocks.0.qweight");       // Np not % 128
  expect_error([&] { pack_qweight(q, 128, 384, "blocks.1.qweight"); }, "blocks.1.qweight");       // N > Np
  expect_error([&] { unpack_qweight(Tensor::zeros(DType::BF16, {256, 192}), N, K, "x.qweight"); }, "x.qweight");
  expect_error([&] { unpack_lora_up(Tensor::zeros(DType::BF16, {256, 40}), N, "a.lora_up"); }, "rank 40");
  expect_error([&] { unpack_wscales_nvfp4(Tensor::zeros(DType::BF16, {20, 256}), N, 20, "b.wscales"); }, "b.wscales");
  expect_error([&] { unpack_vector(Tensor::zeros(DType::F32, {256}), N, "c.bias"); }, "c.bias");
  expect_error([&] { unpack_wscales_int4(Tensor::zeros(DType::BF16, {6, 256}), 300, 5, "d.wscales"); }, "d.wscales");
}

}  // namespace
}  // namespace svdquant
