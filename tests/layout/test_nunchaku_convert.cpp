// `svdquant convert` in both directions (docs/FORMAT.md "Nunchaku interop"): multi-layer nunchaku
// files assembled from the fixture layers are converted to canonical folders whose tensors equal
// the fixtures' canonical.* tensors, and back to nunchaku files holding every original tensor byte
// for byte; padding is removed where the model config gives the true sizes; the converted folders
// run through `svdquant forward` and reproduce the fixtures' reference outputs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "nunchaku_builder.hpp"
#include "svdquant/checkpoint.hpp"
#include "svdquant/error.hpp"
#include "svdquant/layout_canonical.hpp"
#include "svdquant/nunchaku_convert.hpp"
#include "svdquant/safetensors.hpp"
#include "test_util.hpp"

namespace svdquant {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using svdquant::testing::NunchakuFileBuilder;
using svdquant::testing::same_bytes;

class ConvertTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("svdq_convert_" + std::to_string(getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  ConvertOptions quiet() {
    ConvertOptions o;
    o.progress = false;
    o.warn = [this](const std::string& w) { warnings_.push_back(w); };
    return o;
  }

  // nunchaku -> canonical -> nunchaku; checks that the second file holds exactly the first's tensors.
  json round_trip(const NunchakuFileBuilder& b, ConvertOptions opt = {}, uint64_t shard_bytes = uint64_t(5) << 30) {
    if (!opt.warn) opt = quiet();
    opt.shard_bytes = shard_bytes;
    const fs::path src = dir_ / "in.safetensors", folder = dir_ / "canonical", back = dir_ / "back.safetensors";
    b.write(src);
    report_ = convert_nunchaku_to_canonical(src, folder, opt);
    convert_canonical_to_nunchaku(folder, back, opt);
    const SafetensorsFile a = SafetensorsFile::open(src), c = SafetensorsFile::open(back);
    auto an = a.names(), cn = c.names();
    std::sort(an.begin(), an.end());
    std::sort(cn.begin(), cn.end());
    EXPECT_EQ(an, cn);
    for (const auto& n : an) {
      if (!c.contains(n)) continue;
      EXPECT_TRUE(same_bytes(a.tensor(n), c.tensor(n))) << n;
    }
    EXPECT_EQ(a.metadata().at("model_class"), c.metadata().at("model_class"));
    EXPECT_EQ(json::parse(a.metadata().at("config")), json::parse(c.metadata().at("config")));
    EXPECT_EQ(json::parse(a.metadata().at("quantization_config")), json::parse(c.metadata().at("quantization_config")));
    EXPECT_EQ(a.metadata().at("comfy_config"), c.metadata().at("comfy_config"));
    std::ifstream in(folder / "transformer" / "config.json");
    return json::parse(in);
  }

  // The canonical layer `prefix` of the converted folder equals the fixture's canonical.* tensors.
  void expect_fixture_layer(const Checkpoint& ck, const std::string& prefix, const std::string& fixture) {
    SCOPED_TRACE(prefix + " <- " + fixture);
    const SafetensorsFile f = SafetensorsFile::open(svdquant::testing::fixture_path(fixture));
    const LayerWeights w = ck.layer(prefix);
    EXPECT_TRUE(same_bytes(w.qweight, pack_codes(f.tensor("canonical.codes"), w.desc.precision)));
    EXPECT_TRUE(same_bytes(w.wscales, f.tensor("canonical.wscales")));
    EXPECT_TRUE(same_bytes(w.smooth, f.tensor("canonical.smooth")));
    EXPECT_TRUE(same_bytes(w.proj_down, f.tensor("canonical.proj_down")));
    EXPECT_TRUE(same_bytes(w.proj_up, f.tensor("canonical.proj_up")));
    EXPECT_TRUE(same_bytes(w.bias, f.tensor("canonical.bias")));
    EXPECT_FLOAT_EQ(w.alpha(), float(element_as_double(f.tensor("canonical.wtscale"), 0)));
    const json c = json::parse(f.metadata().at("case"));
    EXPECT_EQ(w.desc.act_unsigned, c["act_unsigned"].get<bool>());
  }

  fs::path dir_;
  std::vector<std::string> warnings_;
  ConvertReport report_;
};

TEST_F(ConvertTest, FluxInt4UnsignedLayersRoundTrip) {
  NunchakuFileBuilder b;
  b.config = svdquant::testing::flux_config(1, 128);  // h = 128, MLP = 512: mlp_fc2 is [N 128, K 512]
  for (const char* p : {"transformer_blocks.0.mlp_fc2", "transformer_blocks.0.mlp_context_fc2", "single_transformer_blocks.0.mlp_fc2"})
    b.add_fixture_layer(p, "int4_unsigned_k512_n128_r32");
  b.add_unquantized(10);
  const json cfg = round_trip(b);
  const json& q = cfg["quantization_config"];
  EXPECT_EQ(q["precision"], "int4");
  EXPECT_EQ(q["rank"], 32);
  EXPECT_EQ(q["act_unsigned_modules"].size(), 3u);
  EXPECT_EQ(q["modules_to_not_convert"], json::array({"transformer_blocks.0.norm1.linear"}));
  EXPECT_EQ(cfg["num_attention_heads"], 1);
  EXPECT_EQ(report_.quantized_layers.size(), 3u);
  EXPECT_EQ(report_.carried_tensors.size(), 7u);  // 3 unquantized + 4 of the AWQ layer
  EXPECT_TRUE(report_.padded_layers.empty());
  const Checkpoint ck = Checkpoint::open(dir_ / "canonical");
  for (const char* p : {"transformer_blocks.0.mlp_fc2", "transformer_blocks.0.mlp_context_fc2", "single_transformer_blocks.0.mlp_fc2"})
    expect_fixture_layer(ck, p, "int4_unsigned_k512_n128_r32");
  // Carried tensors are unchanged.
  const SafetensorsFile src = SafetensorsFile::open(dir_ / "in.safetensors");
  for (const auto& n : report_.carried_tensors) EXPECT_TRUE(same_bytes(ck.tensor(n), src.tensor(n))) << n;
}

TEST_F(ConvertTest, FluxInt4SignedLayersRoundTripSharded) {
  NunchakuFileBuilder b;
  b.config = svdquant::testing::flux_config(2, 128);  // h = 256
  b.add_fixture_layer("transformer_blocks.0.out_proj", "int4_k256_n256_r32");
  b.add_fixture_layer("single_transformer_blocks.0.out_proj", "int4_k256_n256_r32");
  b.add_unquantized(20);
  const json cfg = round_trip(b, {}, /*shard_bytes=*/40000);
  EXPECT_FALSE(cfg["quantization_config"].contains("act_unsigned_modules"));
  EXPECT_TRUE(fs::exists(dir_ / "canonical" / "transformer" / "diffusion_pytorch_model.safetensors.index.json"));
  const Checkpoint ck = Checkpoint::open(dir_ / "canonical");
  EXPECT_GT(ck.files().size(), 1u);
  expect_fixture_layer(ck, "transformer_blocks.0.out_proj", "int4_k256_n256_r32");
  expect_fixture_layer(ck, "single_transformer_blocks.0.out_proj", "int4_k256_n256_r32");
}

TEST_F(ConvertTest, FluxNvfp4RoundTrip) {
  NunchakuFileBuilder b;
  b.config = svdquant::testing::flux_config(2, 128);
  b.precision = "fp4_e2m1_all";
  b.add_fixture_layer("transformer_blocks.0.out_proj", "nvfp4_k256_n256_r32");
  b.add_fixture_layer("transformer_blocks.0.out_proj_context", "nvfp4_k256_n256_r32");
  const json cfg = round_trip(b);
  EXPECT_EQ(cfg["quantization_config"]["precision"], "nvfp4");
  const Checkpoint ck = Checkpoint::open(dir_ / "canonical");
  expect_fixture_layer(ck, "transformer_blocks.0.out_proj", "nvfp4_k256_n256_r32");
  expect_fixture_layer(ck, "transformer_blocks.0.out_proj_context", "nvfp4_k256_n256_r32");
}

TEST_F(ConvertTest, QwenImageProjSpellingRoundTrip) {
  NunchakuFileBuilder b;
  b.model_class = "NunchakuQwenImageTransformer2DModel";
  b.config = {{"_class_name", "QwenImageTransformer2DModel"}, {"num_attention_heads", 1}, {"attention_head_dim", 128}};
  b.lora_style = false;
  b.add_fixture_layer("transformer_blocks.0.img_mlp.net.2", "int4_unsigned_k512_n128_r32");
  b.add_fixture_layer("transformer_blocks.0.txt_mlp.net.2", "int4_unsigned_k512_n128_r32");
  b.add_unquantized(30);
  const json cfg = round_trip(b);
  EXPECT_EQ(cfg["quantization_config"]["act_unsigned_modules"].size(), 2u);
  const Checkpoint ck = Checkpoint::open(dir_ / "canonical");
  expect_fixture_layer(ck, "transformer_blocks.0.img_mlp.net.2", "int4_unsigned_k512_n128_r32");
}

// True sizes from the config (h = 320, not a multiple of 128): the padding is removed, and the
// inverse re-creates it byte for byte.
TEST_F(ConvertTest, PaddingRemovedWhereConfigKnowsSizes) {
  for (Precision p : {Precision::INT4, Precision::NVFP4}) {
    SCOPED_TRACE(std::string(to_string(p)));
    TearDown();
    SetUp();
    NunchakuFileBuilder b;
    b.config = svdquant::testing::flux_config(1, 320);  // h = 320, MLP = 1280
    b.precision = p == Precision::INT4 ? "int4" : "fp4_e2m1_all";
    b.rank = 48;
    const auto out_proj = svdquant::testing::random_canonical_layer(320, 320, 48, p, 40);
    const auto qkv = svdquant::testing::random_canonical_layer(960, 320, 48, p, 50);
    b.add_packed_layer("transformer_blocks.0.out_proj", out_proj, p);
    b.add_packed_layer("transformer_blocks.0.qkv_proj", qkv, p);
    ASSERT_EQ(b.tensors.front().second.shape(), (Shape{384, 192}));  // padded qweight
    round_trip(b);
    EXPECT_TRUE(report_.padded_layers.empty());
    const Checkpoint ck = Checkpoint::open(dir_ / "canonical");
    const LayerWeights w = ck.layer("transformer_blocks.0.qkv_proj");
    EXPECT_EQ(w.desc.N, 960);
    EXPECT_EQ(w.desc.K, 320);
    EXPECT_EQ(w.desc.R, 48);
    EXPECT_TRUE(same_bytes(w.qweight, qkv.at("qweight")));
    EXPECT_TRUE(same_bytes(w.wscales, qkv.at("wscales")));
    EXPECT_TRUE(same_bytes(w.proj_down, qkv.at("proj_down")));
    EXPECT_TRUE(same_bytes(w.proj_up, qkv.at("proj_up")));
    EXPECT_TRUE(same_bytes(w.smooth, qkv.at("smooth")));
    EXPECT_TRUE(same_bytes(w.bias, qkv.at("bias")));
  }
}

// Padding that does not hold nunchaku's fills is kept (with a warning), so nothing is lost.
TEST_F(ConvertTest, UnexpectedPaddingIsKept) {
  NunchakuFileBuilder b;
  b.config = svdquant::testing::flux_config(1, 320);
  b.add_packed_layer("transformer_blocks.0.out_proj", svdquant::testing::random_canonical_layer(320, 320, 32, Precision::INT4, 60),
                     Precision::INT4);
  // A non-zero code in a padded row.
  for (auto& [n, t] : b.tensors)
    if (n == "transformer_blocks.0.out_proj.qweight") t.data_as<uint8_t>()[t.nbytes() - 1] = 0x11;
  round_trip(b, quiet());
  ASSERT_EQ(report_.padded_layers.size(), 1u);
  EXPECT_FALSE(warnings_.empty());
  const Checkpoint ck = Checkpoint::open(dir_ / "canonical");
  EXPECT_EQ(ck.layer("transformer_blocks.0.out_proj").desc.N, 384);
}

// An unknown model family: int4 layers cannot be classified, and the conversion says which.
TEST_F(ConvertTest, UnclassifiableLayersAreReported) {
  NunchakuFileBuilder b;
  b.model_class = "NunchakuSomethingNew";
  b.add_fixture_layer("blocks.0.ff.fc2", "int4_unsigned_k512_n128_r32");
  b.add_fixture_layer("blocks.0.attn.out", "int4_k256_n256_r32");
  b.write(dir_ / "in.safetensors");
  try {
    convert_nunchaku_to_canonical(dir_ / "in.safetensors", dir_ / "out", quiet());
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("blocks.0.ff.fc2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("blocks.0.attn.out"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir_ / "out"));
  // Named explicitly, it converts; sizes are unknown so the padded sizes stay, with a warning.
  ConvertOptions o = quiet();
  o.act_unsigned = {"ff.fc2"};
  o.act_signed = {"attn"};
  const json cfg = round_trip(b, o);
  EXPECT_EQ(cfg["quantization_config"]["act_unsigned_modules"], json::array({"blocks.0.ff.fc2"}));
  EXPECT_EQ(report_.padded_layers.size(), 2u);
  EXPECT_FALSE(warnings_.empty());
}

// ---------------------------------------------------------------- forward through the CLI

int run(const std::string& args, std::string* output = nullptr) {
  const std::string cmd = std::string(SVDQUANT_CLI) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return -1;
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int rc = pclose(p);
  if (output) *output = out;
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

double rel_l2(const Tensor& y, const Tensor& ref) {
  const auto a = to_f64_vector(y), b = to_f64_vector(ref);
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / den);
}

TEST_F(ConvertTest, ConvertedFolderReproducesFixtureForward) {
  struct Case {
    const char* fixture;
    std::string precision;
    int64_t heads;
    const char* layer;
  };
  for (const Case& c : {Case{"int4_k256_n256_r32", "int4", 2, "transformer_blocks.0.out_proj"},
                        Case{"int4_unsigned_k512_n128_r32", "int4", 1, "single_transformer_blocks.0.mlp_fc2"},
                        Case{"nvfp4_k256_n256_r32", "fp4_e2m1_all", 2, "transformer_blocks.0.out_proj_context"}}) {
    SCOPED_TRACE(c.fixture);
    NunchakuFileBuilder b;
    b.precision = c.precision;
    b.config = svdquant::testing::flux_config(c.heads, 128);
    b.add_fixture_layer(c.layer, c.fixture);
    const fs::path src = dir_ / (std::string(c.fixture) + ".nunchaku.safetensors");
    const fs::path folder = dir_ / (std::string(c.fixture) + ".canonical");
    b.write(src);
    std::string out;
    ASSERT_EQ(run("convert " + src.string() + " -o " + folder.string(), &out), 0) << out;
    EXPECT_NE(out.find("converted 1 quantized layer"), std::string::npos) << out;
    const SafetensorsFile f = SafetensorsFile::open(svdquant::testing::fixture_path(c.fixture));
    const fs::path x = dir_ / "x.safetensors", y = dir_ / "y.safetensors";
    write_safetensors(x, {{"x", f.tensor("forward.x")}});
    ASSERT_EQ(run("forward --backend cpu --model " + folder.string() + " --layer " + c.layer + " --input " + x.string() + " --output " +
                      y.string(),
                  &out),
              0)
        << out;
    const Tensor got = SafetensorsFile::open(y).tensor("y");
    // y is T (bf16): rounding the exact result to bf16 alone costs ~1.6e-3 relative L2 on these
    // fixtures (forward.y_ref, the float64 reference rounded to T, is that far from y_ref_f64), so
    // the float64 reference is matched to within that rounding floor, and the T reference to
    // float32 summation-order noise.
    const double floor_t = rel_l2(f.tensor("forward.y_ref"), f.tensor("forward.y_ref_f64"));
    const double err = rel_l2(got, f.tensor("forward.y_ref_f64"));
    EXPECT_LT(rel_l2(got, f.tensor("forward.y_ref")), 1e-5) << c.layer;
    EXPECT_LE(err, floor_t * 1.01) << c.layer;
    EXPECT_LT(err, 2e-3) << c.layer;
  }
}

}  // namespace
}  // namespace svdquant
