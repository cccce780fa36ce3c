// The hardware gate of cuda-sm90 (backend.hpp): registered exactly when CUDA was built, refusing
// with a reason (never throwing) where it cannot run, and accepting int4 layers on Hopper.
#include <gtest/gtest.h>

#include "cuda_test_util.hpp"
#include "svdquant/error.hpp"

using namespace svdquant;

namespace {

LayerDesc int4_desc() {
  LayerDesc d;
  d.N = 3072;
  d.K = 3072;
  d.R = 32;
  return d;
}

}  // namespace

TEST(CudaGate, RegisteredWhenBuiltWithCuda) {
#ifdef SVDQUANT_HAVE_CUDA
  const Backend* b = cudatest::cuda_backend();
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->device_type(), DeviceType::CUDA);
#else
  EXPECT_EQ(cudatest::cuda_backend(), nullptr);
  EXPECT_THROW(BackendRegistry::instance().select("cuda", int4_desc(), {}), UnsupportedError);
#endif
}

TEST(CudaGate, ReasonNamesTheMissingHardwareOrNothing) {
  const Backend* b = cudatest::cuda_backend();
  if (!b) GTEST_SKIP() << "built without CUDA";
  std::optional<std::string> why;
  EXPECT_NO_THROW(why = b->unsupported_reason(int4_desc(), {}));
  if (why) {
    // No GPU, no driver, or another architecture: the reason says which.
    EXPECT_TRUE(why->find("CUDA") != std::string::npos || why->find("needs sm_90 (Hopper), found sm_") != std::string::npos)
        << *why;
    // Selection by name refuses with that reason; "auto" falls back to the CPU.
    EXPECT_THROW(BackendRegistry::instance().select("cuda-sm90", int4_desc(), {}), UnsupportedError);
    EXPECT_EQ(BackendRegistry::instance().select("auto", int4_desc(), {}).name(), "cpu");
  } else {
    EXPECT_EQ(BackendRegistry::instance().select("auto", int4_desc(), {}).name(), "cuda-sm90");
  }
}

TEST(CudaGate, RefusesWhatItDoesNotImplement) {
  SVDQUANT_SKIP_WITHOUT_HOPPER();
  const Backend* b = cudatest::cuda_backend();
  LayerDesc d = int4_desc();
  ForwardOptions half;
  half.accumulate = Accumulate::HALF;
  EXPECT_FALSE(b->unsupported_reason(d, half).has_value());
  d.dtype = HalfKind::FP16;
  EXPECT_FALSE(b->unsupported_reason(d, {}).has_value());

  // nvfp4 runs with fp32 accumulation (the default); half accumulation is refused.
  LayerDesc nv = int4_desc();
  nv.precision = Precision::NVFP4;
  EXPECT_FALSE(b->unsupported_reason(nv, {}).has_value());
  auto why = b->unsupported_reason(nv, half);
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("nvfp4"), std::string::npos) << *why;

  // fp8 activations (NUMERICS.md §5) run with fp32 accumulation; half is not defined for them.
  ForwardOptions fp8;
  fp8.activations = Activations::FP8;
  EXPECT_FALSE(b->unsupported_reason(int4_desc(), fp8).has_value());
  fp8.accumulate = Accumulate::HALF;
  why = b->unsupported_reason(int4_desc(), fp8);
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("fp8"), std::string::npos) << *why;

  LayerDesc big = int4_desc();
  big.R = 129;
  why = b->unsupported_reason(big, {});
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("rank"), std::string::npos) << *why;

  LayerDesc badk = int4_desc();
  badk.K = 96;
  EXPECT_TRUE(b->unsupported_reason(badk, {}).has_value());
}

// Activations::AUTO (the default): fp8 for int4 layers with fp32 accumulation on cuda-sm90, 4-bit
// otherwise, and always 4-bit on the CPU. resolve() is a pure function: no GPU needed.
TEST(CudaGate, AutoActivationsResolveToFp8ForInt4Fp32) {
  ForwardOptions dflt;
  ASSERT_EQ(dflt.activations, Activations::AUTO);
  const Backend* cpu = BackendRegistry::instance().find("cpu");
  ASSERT_NE(cpu, nullptr);
  EXPECT_EQ(cpu->resolve(int4_desc(), dflt).activations, Activations::CHECKPOINT);
  const Backend* b = cudatest::cuda_backend();
  if (!b) GTEST_SKIP() << "built without CUDA";
  EXPECT_EQ(b->resolve(int4_desc(), dflt).activations, Activations::FP8);
  ForwardOptions half;
  half.accumulate = Accumulate::HALF;
  EXPECT_EQ(b->resolve(int4_desc(), half).activations, Activations::CHECKPOINT);
  EXPECT_EQ(b->resolve(int4_desc(), half).accumulate, Accumulate::HALF);
  LayerDesc nv = int4_desc();
  nv.precision = Precision::NVFP4;
  EXPECT_EQ(b->resolve(nv, dflt).activations, Activations::CHECKPOINT);
  // An explicit mode is never changed.
  ForwardOptions ck;
  ck.activations = Activations::CHECKPOINT;
  EXPECT_EQ(b->resolve(int4_desc(), ck).activations, Activations::CHECKPOINT);
}
