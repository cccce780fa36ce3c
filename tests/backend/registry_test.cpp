// Backend registry and hardware gate: unsupported requests are refused with the reason.
#include <gtest/gtest.h>

#include "fixture_util.hpp"
#include "svdquant/backend.hpp"
#include "svdquant/error.hpp"
#include "svdquant/linear.hpp"

using namespace svdquant;

namespace {
std::string refusal(const std::string& choice, const LayerDesc& d, const ForwardOptions& o) {
  try {
    BackendRegistry::instance().select(choice, d, o);
  } catch (const UnsupportedError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Registry, HasTheCpuReference) {
  const Backend* cpu = BackendRegistry::instance().find("cpu");
  ASSERT_NE(cpu, nullptr);
  EXPECT_EQ(cpu->device_type(), DeviceType::CPU);
  LayerDesc d{Precision::INT4, HalfKind::BF16, 128, 256, 32, false, true};
  EXPECT_EQ(&BackendRegistry::instance().select("cpu", d, {}), cpu);
  // "auto" always finds a backend for a valid layer: at worst the CPU reference.
  EXPECT_NO_THROW(BackendRegistry::instance().select("auto", d, {}));
}

TEST(Registry, RefusesWithReasons) {
  LayerDesc d{Precision::INT4, HalfKind::BF16, 128, 100, 32, false, true};
  EXPECT_NE(refusal("cpu", d, {}).find("K = 100 is not a positive multiple of the group size 64"), std::string::npos) << refusal("cpu", d, {});
  d.K = 256;
  EXPECT_NE(refusal("cpu", d, {Accumulate::HALF, Activations::FP8}).find("half accumulation"), std::string::npos);
  EXPECT_NE(refusal("tpu", d, {}).find("unknown backend 'tpu'"), std::string::npos);
#ifndef SVDQUANT_HAVE_CUDA
  EXPECT_NE(refusal("cuda", d, {}).find("built without CUDA"), std::string::npos);
#endif
  d.precision = Precision::NVFP4;
  d.act_unsigned = true;
  EXPECT_NE(refusal("cpu", d, {}).find("int4 only"), std::string::npos);
}

TEST(Registry, RefusalHappensBeforePrepare) {
  test::Fixture f = test::load_fixture("int4_k256_n256_r32");
  LinearOptions o;
  o.backend = "cpu";
  o.forward = {Accumulate::HALF, Activations::FP8};
  EXPECT_THROW(SVDQuantLinear(f.layer, o), UnsupportedError);
  o.backend = "no-such-backend";
  o.forward = {};
  EXPECT_THROW(SVDQuantLinear(f.layer, o), UnsupportedError);
}

TEST(Linear, AnyLeadingDims) {
  test::Fixture f = test::load_fixture("int4_k256_n256_r32");
  SVDQuantLinear lin(f.layer, LinearOptions{"cpu", {}});
  Tensor x = f.file.tensor("forward.x");  // [37, 256]
  Tensor y2 = lin.forward(x);
  Tensor x3 = x.clone().reshape({37, 1, 256});
  Tensor y3 = lin.forward(x3);
  EXPECT_EQ(y3.shape(), (Shape{37, 1, 256}));
  EXPECT_EQ(std::memcmp(y2.data(), y3.data(), y2.nbytes()), 0);
  EXPECT_THROW(lin.forward(Tensor::zeros(DType::BF16, {3, 255})), FormatError);
}
