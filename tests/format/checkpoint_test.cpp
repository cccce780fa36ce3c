// Canonical checkpoint folders: writing (atomic, sharded), reading, layer validation.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "fixture_util.hpp"
#include "svdquant/checkpoint.hpp"
#include "svdquant/error.hpp"

using namespace svdquant;
namespace fs = std::filesystem;

namespace {

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("svdq_ck_" + std::to_string(::getpid())) / name;
  fs::remove_all(d);
  fs::create_directories(d.parent_path());
  return d;
}

QuantConfig config_for(const test::Fixture& f) {
  QuantConfig q;
  q.rank = int(f.layer.desc.R);
  q.precision = f.layer.desc.precision;
  if (f.layer.desc.act_unsigned) q.act_unsigned_modules = {"mlp.fc2"};
  return q;
}

std::string format_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Checkpoint, WriteAndReadBackEveryFixture) {
  for (const char* name : test::kFixtures) {
    test::Fixture f = test::load_fixture(name);
    LayerWeights w = f.layer;
    w.prefix = f.layer.desc.act_unsigned ? "blocks.0.mlp.fc2" : "blocks.0.attn.to_q";
    fs::path dir = fresh_dir(name);
    write_checkpoint_folder(dir, R"({"_class_name":"Test"})", config_for(f), layer_tensors(w));
    EXPECT_TRUE(fs::exists(dir / "transformer" / "config.json"));
    EXPECT_TRUE(fs::exists(dir / "transformer" / "diffusion_pytorch_model.safetensors"));
    for (const fs::path& p : {dir, dir / "transformer"}) {
      Checkpoint ck = Checkpoint::open(p);
      ASSERT_TRUE(ck.quant_config());
      EXPECT_EQ(ck.quantized_layers(), std::vector<std::string>{w.prefix});
      LayerWeights r = ck.layer(w.prefix);
      EXPECT_EQ(r.desc.N, w.desc.N);
      EXPECT_EQ(r.desc.K, w.desc.K);
      EXPECT_EQ(r.desc.R, w.desc.R);
      EXPECT_EQ(r.desc.precision, w.desc.precision);
      EXPECT_EQ(r.desc.act_unsigned, w.desc.act_unsigned) << name;
      EXPECT_EQ(std::memcmp(r.qweight.data(), w.qweight.data(), w.qweight.nbytes()), 0);
      EXPECT_EQ(std::memcmp(r.wscales.data(), w.wscales.data(), w.wscales.nbytes()), 0);
      EXPECT_EQ(r.alpha(), w.alpha());
    }
    // Refuses to overwrite.
    EXPECT_NE(format_error([&] { write_checkpoint_folder(dir, "{}", config_for(f), layer_tensors(w)); }).find("already exists"),
              std::string::npos);
  }
}

TEST(Checkpoint, ShardsWithIndex) {
  test::Fixture f = test::load_fixture("int4_k256_n256_r32");
  std::vector<std::pair<std::string, Tensor>> all;
  for (int i = 0; i < 3; ++i) {
    LayerWeights w = f.layer;
    w.prefix = "blocks." + std::to_string(i) + ".proj";
    for (auto& t : layer_tensors(w)) all.push_back(t);
  }
  fs::path dir = fresh_dir("sharded");
  write_checkpoint_folder(dir, "{}", config_for(f), all, 40000);
  EXPECT_TRUE(fs::exists(dir / "transformer" / "diffusion_pytorch_model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir / "transformer" / "diffusion_pytorch_model.safetensors"));
  Checkpoint ck = Checkpoint::open(dir);
  EXPECT_GT(ck.files().size(), 1u);
  EXPECT_EQ(ck.quantized_layers().size(), 3u);
  EXPECT_EQ(ck.tensor_names().size(), all.size());
  LayerWeights r = ck.layer("blocks.2.proj");
  EXPECT_EQ(std::memcmp(r.proj_up.data(), f.layer.proj_up.data(), f.layer.proj_up.nbytes()), 0);
}

TEST(Checkpoint, AcceptsNunchakuSpellings) {
  test::Fixture f = test::load_fixture("int4_k256_n256_r32");
  fs::path dir = fresh_dir("spellings");
  fs::create_directories(dir);
  write_safetensors(dir / "model.safetensors", {{"l.qweight", f.layer.qweight}, {"l.wscales", f.layer.wscales},
                                                {"l.smooth", f.layer.smooth}, {"l.smooth_orig", f.layer.smooth},
                                                {"l.lora_down", f.layer.proj_down}, {"l.lora_up", f.layer.proj_up}});
  Checkpoint ck = Checkpoint::open(dir / "model.safetensors");
  EXPECT_FALSE(ck.quant_config());
  LayerWeights w = ck.layer("l");
  EXPECT_EQ(w.desc.precision, Precision::INT4);  // inferred from the wscales dtype
  EXPECT_EQ(w.desc.R, 32);
  EXPECT_FALSE(w.desc.has_bias);
}

TEST(Checkpoint, LayerErrorsNameTheTensor) {
  test::Fixture f = test::load_fixture("int4_k256_n256_r32");
  auto with = [&](const std::string& drop, const std::string& swap, const Tensor& t) {
    std::vector<std::pair<std::string, Tensor>> ts;
    for (auto& [n, x] : layer_tensors(f.layer)) {
      std::string name = "l" + n.substr(n.find('.'));
      if (name == "l." + drop) continue;
      ts.emplace_back(name, name == "l." + swap ? t : x);
    }
    fs::path dir = fresh_dir("bad_" + drop + swap);
    write_checkpoint_folder(dir, "{}", config_for(f), ts);
    return format_error([&] { Checkpoint::open(dir).layer("l"); });
  };
  EXPECT_NE(with("proj_up", "", {}).find("lacks l.proj_up"), std::string::npos);
  EXPECT_NE(with("", "proj_down", Tensor::zeros(DType::BF16, {256, 16})).find("rank mismatch"), std::string::npos);
  EXPECT_NE(with("", "wscales", Tensor::zeros(DType::F32, {4, 256})).find("l.wscales: expected BF16 [4, 256], found F32 [4, 256]"),
            std::string::npos);
  EXPECT_NE(with("", "qweight", Tensor::zeros(DType::I8, {256, 100})).find("not a multiple of the group size 64"), std::string::npos);
  EXPECT_NE(with("", "bias", Tensor::zeros(DType::BF16, {255})).find("l.bias"), std::string::npos);
  EXPECT_NE(with("", "smooth_factor", Tensor::zeros(DType::F16, {256})).find("l.smooth_factor"), std::string::npos);
  // quantization_config.rank must agree with the tensors.
  QuantConfig q = config_for(f);
  q.rank = 16;
  fs::path dir = fresh_dir("rank");
  LayerWeights w = f.layer;
  w.prefix = "l";
  write_checkpoint_folder(dir, "{}", q, layer_tensors(w));
  EXPECT_NE(format_error([&] { Checkpoint::open(dir).layer("l"); }).find("quantization_config.rank = 16"), std::string::npos);
  EXPECT_NE(format_error([&] { Checkpoint::open(dir).layer("nope"); }).find("no quantized layer 'nope'"), std::string::npos);
}

TEST(Checkpoint, RefusesNunchakuPackedFilesAndMissingPaths) {
  test::Fixture f = test::load_fixture("int4_k256_n256_r32");
  fs::path dir = fresh_dir("nunchaku");
  fs::create_directories(dir);
  write_safetensors(dir / "svdq-int4.safetensors", {{"l.qweight", f.layer.qweight}}, {{"model_class", "NunchakuFluxTransformer2dModel"}});
  EXPECT_NE(format_error([&] { Checkpoint::open(dir / "svdq-int4.safetensors"); }).find("svdquant convert"), std::string::npos);
  EXPECT_NE(format_error([&] { Checkpoint::open(dir / "missing"); }).find("no such file"), std::string::npos);
  fs::create_directories(dir / "empty");
  EXPECT_NE(format_error([&] { Checkpoint::open(dir / "empty"); }).find("no .safetensors"), std::string::npos);
}
