// `svdquant lora merge`: a PEFT/diffusers LoRA appended to the low-rank branch reproduces
// y + s * (x A^T) B^T computed directly (NUMERICS.md §4.3: the branch sees the raw input, so A is
// appended unchanged), layers without a LoRA keep their outputs bit for bit, and malformed LoRAs
// are refused naming the tensor.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "nunchaku_builder.hpp"
#include "svdquant/checkpoint.hpp"
#include "svdquant/cpu_reference.hpp"
#include "svdquant/error.hpp"
#include "svdquant/float_formats.hpp"
#include "svdquant/lora_merge.hpp"
#include "svdquant/nunchaku_convert.hpp"
#include "test_util.hpp"

namespace svdquant {
namespace {

namespace fs = std::filesystem;
using svdquant::testing::same_bytes;

const std::string kP = "transformer_blocks.0.out_proj", kQ = "single_transformer_blocks.0.out_proj";

int run_cli(const std::string& args, std::string* output) {
  const std::string cmd = std::string(SVDQUANT_CLI) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) output->append(buf, n);
  const int rc = pclose(p);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// Random values in [-amp, amp] stored as `dtype`.
Tensor random_matrix(DType dtype, Shape shape, uint32_t seed, float amp) {
  Tensor t = Tensor::zeros(dtype, std::move(shape));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-amp, amp);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float v = u(rng);
    if (dtype == DType::F32)
      t.data_as<float>()[i] = v;
    else
      t.data_as<uint16_t>()[i] = f32_to_half(dtype == DType::BF16 ? HalfKind::BF16 : HalfKind::FP16, v);
  }
  return t;
}

class LoraMerge : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("svdq_lora_" + std::to_string(getpid()) + "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // A canonical folder with two int4 layers (both the int4 fixture), via convert.
    svdquant::testing::NunchakuFileBuilder b;
    b.config = svdquant::testing::flux_config(2, 128);
    b.add_fixture_layer(kP, "int4_k256_n256_r32");
    b.add_fixture_layer(kQ, "int4_k256_n256_r32");
    b.add_unquantized(3);
    b.write(dir_ / "n.safetensors");
    ConvertOptions o;
    o.progress = false;
    convert_nunchaku_to_canonical(dir_ / "n.safetensors", dir_ / "base", o);
    fixture_ = SafetensorsFile::open(svdquant::testing::fixture_path("int4_k256_n256_r32"));
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Merges with the CLI, then checks every output of layer kP against y + s * (x A^T) B^T in float64
  // (relative L2 of the LoRA contribution below `tol`) and kQ's outputs bit for bit.
  void merge_and_check(const Tensor& A, const Tensor& B, double s, double tol, const std::string& key_a = "lora_A",
                       const std::string& key_b = "lora_B") {
    write_safetensors(dir_ / "lora.safetensors", {{"transformer." + kP + "." + key_a + ".weight", A},
                                                  {"transformer." + kP + "." + key_b + ".weight", B},
                                                  {"transformer.context_embedder.lora_A.weight", A},
                                                  {"transformer.context_embedder.lora_B.weight", B}});
    std::string out;
    ASSERT_EQ(run_cli("lora merge " + (dir_ / "base").string() + " " + (dir_ / "lora.safetensors").string() + " --strength " +
                          std::to_string(s) + " -o " + (dir_ / "merged").string(),
                      &out),
              0)
        << out;
    EXPECT_NE(out.find("context_embedder"), std::string::npos) << out;  // the unmatched module is reported
    const Checkpoint base = Checkpoint::open(dir_ / "base"), merged = Checkpoint::open(dir_ / "merged");
    const int64_t r = A.size(0), R = 32, R2 = R + (r + 15) / 16 * 16;
    EXPECT_EQ(merged.quant_config()->rank, R2);
    const Tensor x = fixture_.tensor("forward.x");
    const ForwardOptions opt;
    // kP: the LoRA contribution, computed directly.
    const LayerWeights w0 = base.layer(kP), w1 = merged.layer(kP);
    EXPECT_EQ(w1.desc.R, R2);
    const auto y0 = to_f64_vector(ref::forward_f32(x, w0, opt)), y1 = to_f64_vector(ref::forward_f32(x, w1, opt));
    const auto xv = to_f64_vector(x), av = to_f64_vector(A), bv = to_f64_vector(B);
    const int64_t M = x.size(0), K = x.size(1), N = B.size(0);
    double num = 0, den = 0;
    for (int64_t m = 0; m < M; ++m) {
      std::vector<double> l(size_t(r), 0.0);
      for (int64_t j = 0; j < r; ++j)
        for (int64_t k = 0; k < K; ++k) l[size_t(j)] += xv[size_t(m * K + k)] * av[size_t(j * K + k)];
      for (int64_t n = 0; n < N; ++n) {
        double d = 0;
        for (int64_t j = 0; j < r; ++j) d += l[size_t(j)] * bv[size_t(n * r + j)];
        const double want = s * d, got = y1[size_t(m * N + n)] - y0[size_t(m * N + n)];
        num += (got - want) * (got - want);
        den += want * want;
      }
    }
    ASSERT_GT(den, 0.0);
    const double rel = std::sqrt(num / den);
    std::printf("LoRA contribution: relative L2 error %.3g (tolerance %.3g)\n", rel, tol);
    EXPECT_LT(rel, tol);
    // The contribution is large compared with the tolerance, so the check can fail.
    double y0n = 0;
    for (double v : y0) y0n += v * v;
    EXPECT_GT(std::sqrt(den / y0n), 0.05);
    // kQ had no LoRA: zero columns, same outputs bit for bit.
    EXPECT_EQ(merged.layer(kQ).desc.R, R2);
    EXPECT_TRUE(same_bytes(ref::forward(x, merged.layer(kQ), opt), ref::forward(x, base.layer(kQ), opt)));
    // Everything else is carried over.
    EXPECT_TRUE(same_bytes(merged.tensor(kP + ".qweight"), base.tensor(kP + ".qweight")));
    EXPECT_TRUE(same_bytes(merged.tensor("x_embedder.weight"), base.tensor("x_embedder.weight")));
  }

  fs::path dir_;
  SafetensorsFile fixture_;
};

// A and B already bf16 and s a power of two: the merged branch holds them exactly, so only float32
// summation order separates the result from the direct computation.
TEST_F(LoraMerge, ExactWhenRepresentable) {
  merge_and_check(random_matrix(DType::BF16, {16, 256}, 1, 0.1f), random_matrix(DType::BF16, {256, 16}, 2, 0.1f), 0.5, 1e-5);
}

// A float32 LoRA of rank 8 (padded to 16 zero columns) and s = 0.7: bf16 rounding of A and s*B.
TEST_F(LoraMerge, Float32RankEightWithStrength) {
  merge_and_check(random_matrix(DType::F32, {8, 256}, 3, 0.1f), random_matrix(DType::F32, {256, 8}, 4, 0.1f), 0.7, 1e-2,
                  "lora_down", "lora_up");
}

TEST_F(LoraMerge, MergedCheckpointExportsToNunchaku) {
  merge_and_check(random_matrix(DType::BF16, {16, 256}, 5, 0.1f), random_matrix(DType::BF16, {256, 16}, 6, 0.1f), 1.0, 1e-5);
  ConvertOptions o;
  o.progress = false;
  convert_canonical_to_nunchaku(dir_ / "merged", dir_ / "merged.safetensors", o);
  const SafetensorsFile f = SafetensorsFile::open(dir_ / "merged.safetensors");
  EXPECT_EQ(f.info(kP + ".lora_down").shape, (Shape{256, 48}));
  EXPECT_EQ(f.info(kP + ".lora_up").shape, (Shape{256, 48}));
  // nunchaku's Python loaders take the rank from quantization_config (32 when absent).
  EXPECT_EQ(nlohmann::json::parse(f.metadata().at("quantization_config"))["rank"], 48);
}

TEST_F(LoraMerge, BadLorasAreRefused) {
  auto expect_refused = [&](const std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& needle) {
    write_safetensors(dir_ / "bad.safetensors", tensors);
    std::string out;
    EXPECT_EQ(run_cli("lora merge " + (dir_ / "base").string() + " " + (dir_ / "bad.safetensors").string() + " -o " +
                          (dir_ / "out").string(),
                      &out),
              1)
        << out;
    EXPECT_NE(out.find(needle), std::string::npos) << out;
    EXPECT_FALSE(fs::exists(dir_ / "out"));
  };
  const Tensor A = random_matrix(DType::BF16, {16, 256}, 7, 0.1f), B = random_matrix(DType::BF16, {256, 16}, 8, 0.1f);
  const std::string a = kP + ".lora_A.weight", b = kP + ".lora_B.weight";
  expect_refused({{a, A}}, a);                                                            // B missing
  expect_refused({{a, random_matrix(DType::BF16, {16, 128}, 9, 0.1f)}, {b, B}}, a);       // K mismatch
  expect_refused({{a, A}, {b, random_matrix(DType::BF16, {128, 16}, 9, 0.1f)}}, b);       // N mismatch
  expect_refused({{a, A}, {b, random_matrix(DType::BF16, {256, 8}, 9, 0.1f)}}, "rank mismatch");
  expect_refused({{"foo.lora_A.weight", A}, {"foo.lora_B.weight", B}}, "names a quantized layer");
  expect_refused({{a, A}, {b, B}, {kP + ".dora_scale", A}}, kP + ".dora_scale");          // unknown tensor
}

}  // namespace
}  // namespace svdquant
