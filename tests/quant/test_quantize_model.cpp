// quantize_model / `svdquant quantize` (docs/QUANTIZER.md): skip tables, act_unsigned layers,
// calibration statistics, the search and refinement guarantees, the output checkpoint, bad input.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "quant_test_util.hpp"
#include "svdquant/checkpoint.hpp"
#include "svdquant/error.hpp"
#include "svdquant/quantize.hpp"
#include "svdquant/safetensors.hpp"
#include "synthetic_layer.hpp"

namespace svdquant {
namespace {
namespace fs = std::filesystem;

constexpr int64_t H = 128, F = 256;  // hidden and MLP widths of the tiny FLUX-like model

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("svdquant_qm_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
                                        "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

Tensor bf16(const std::vector<float>& v, Shape s) { return testing::half_tensor(v, std::move(s), HalfKind::BF16); }

void add_linear(std::vector<std::pair<std::string, Tensor>>& t, const std::string& m, int64_t N, int64_t K, uint64_t seed) {
  const auto L = testing::make_layer(N, K, 1, HalfKind::BF16, seed);
  t.emplace_back(m + ".weight", bf16(L.W, {N, K}));
  t.emplace_back(m + ".bias", bf16(L.bias, {N}));
}

// A FLUX-named transformer folder: top-level embedders and proj_out, one double and one single block.
fs::path write_model(const fs::path& dir, bool with_3d = false, int64_t odd_k = 0) {
  std::vector<std::pair<std::string, Tensor>> t;
  add_linear(t, "x_embedder", H, 64, 1);
  add_linear(t, "proj_out", 64, H, 2);
  add_linear(t, "norm_out.linear", 2 * H, H, 3);
  add_linear(t, "transformer_blocks.0.norm1.linear", 6 * H, H, 4);
  add_linear(t, "transformer_blocks.0.attn.to_q", H, H, 5);
  add_linear(t, "transformer_blocks.0.attn.to_k", H, H, 6);
  add_linear(t, "transformer_blocks.0.ff.net.0.proj", F, H, 7);
  add_linear(t, "transformer_blocks.0.ff.net.2", H, F, 8);
  add_linear(t, "single_transformer_blocks.0.proj_out", H, H + F, 9);
  t.emplace_back("transformer_blocks.0.attn.norm_q.weight", bf16(std::vector<float>(64, 1.5f), {64}));
  if (with_3d) t.emplace_back("transformer_blocks.0.attn.to_v.weight", bf16(std::vector<float>(2 * H * H, 0.01f), {2, H, H}));
  if (odd_k) add_linear(t, "transformer_blocks.0.attn.to_out.0", H, odd_k, 10);
  const fs::path comp = dir / "model" / "transformer";
  fs::create_directories(comp);
  std::ofstream(comp / "config.json") << R"({"_class_name": "FluxTransformer2DModel", "num_layers": 1})";
  write_safetensors(comp / "diffusion_pytorch_model.safetensors", t);
  return dir / "model";
}

// Calibration statistics for `modules` (K from the model), with a few outlier channels.
fs::path write_calib(const fs::path& dir, const fs::path& model, const std::vector<std::string>& modules) {
  const Checkpoint ck = Checkpoint::open(model);
  std::vector<std::pair<std::string, Tensor>> t;
  uint64_t seed = 100;
  for (const auto& m : modules) {
    const int64_t K = ck.info(m + ".weight").shape[1];
    const auto L = testing::make_layer(8, K, 32, HalfKind::BF16, seed++, 3, 30.0f, m.find("net.2") != std::string::npos);
    Tensor a = Tensor::zeros(DType::F32, {K});
    std::copy(L.absmax.begin(), L.absmax.end(), a.data_as<float>());
    t.emplace_back(m + ".input_absmax", a);
    t.emplace_back(m + ".input_samples", bf16(L.X, {32, K}));
  }
  write_safetensors(dir / "calib.safetensors", t);
  return dir / "calib.safetensors";
}

const std::vector<std::string> kBlockLinears = {
    "transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_k", "transformer_blocks.0.ff.net.0.proj",
    "transformer_blocks.0.ff.net.2", "single_transformer_blocks.0.proj_out"};

TEST(QuantizeModel, FamilySkipsUserSkipsAndActUnsigned) {
  TempDir tmp;
  const fs::path model = write_model(tmp.path);
  ModelQuantizeOptions opt;
  opt.rank = 8;
  opt.modules_to_not_convert = {"attn.to_k"};
  const ModelQuantizeReport rep = quantize_model(model, tmp.path / "out", opt);
  EXPECT_EQ(rep.family, "flux");
  const Checkpoint out = Checkpoint::open(tmp.path / "out");
  const std::vector<std::string> q = out.quantized_layers();
  const std::vector<std::string> expected = {"single_transformer_blocks.0.proj_out", "transformer_blocks.0.attn.to_q",
                                             "transformer_blocks.0.ff.net.0.proj", "transformer_blocks.0.ff.net.2"};
  EXPECT_EQ(q, expected);
  // 16-bit layers and other tensors are copied unchanged.
  const Checkpoint in = Checkpoint::open(model);
  for (const char* name : {"proj_out.weight", "x_embedder.bias", "transformer_blocks.0.norm1.linear.weight",
                           "transformer_blocks.0.attn.to_k.weight", "transformer_blocks.0.attn.norm_q.weight"}) {
    ASSERT_TRUE(out.has_tensor(name)) << name;
    EXPECT_TRUE(testing::same_bytes(out.tensor(name), in.tensor(name))) << name;
  }
  EXPECT_FALSE(out.has_tensor("transformer_blocks.0.attn.to_q.weight"));
  ASSERT_TRUE(out.quant_config());
  const QuantConfig& qc = *out.quant_config();
  EXPECT_EQ(qc.rank, 8);
  EXPECT_TRUE(qc.layer_act_unsigned("transformer_blocks.0.ff.net.2"));
  EXPECT_FALSE(qc.layer_act_unsigned("transformer_blocks.0.ff.net.0.proj"));
  EXPECT_TRUE(out.layer("transformer_blocks.0.ff.net.2").desc.act_unsigned);
  EXPECT_TRUE(qc.layer_skipped("transformer_blocks.0.attn.to_k"));
  for (const auto& m : q) EXPECT_FALSE(qc.layer_skipped(m)) << m;  // top-level proj_out is not listed
  EXPECT_TRUE(fs::exists(tmp.path / "out" / "quantization_report.json"));
  EXPECT_EQ(rep.layers.size(), 4u);
}

TEST(QuantizeModel, OutputLayersReproduceTheirFloat64RecomputationAndBeatRtn) {
  TempDir tmp;
  const fs::path model = write_model(tmp.path);
  const fs::path calib = write_calib(tmp.path, model, kBlockLinears);
  ModelQuantizeOptions opt;
  opt.rank = 16;
  opt.calib = calib;
  opt.refine = 1;
  const ModelQuantizeReport rep = quantize_model(model, tmp.path / "out", opt);
  const Checkpoint out = Checkpoint::open(tmp.path / "out");
  const Checkpoint in = Checkpoint::open(model);
  const CalibrationStats cs = CalibrationStats::open(calib);
  for (const auto& l : rep.layers) {
    SCOPED_TRACE(l.module);
    EXPECT_LT(l.quality.svdquant, 0.5 * l.quality.rtn);
    const LayerWeights w = out.layer(l.module);
    int64_t M = 0;
    const std::vector<float> X = cs.samples(l.module, w.desc.K, 32, M);
    const std::vector<float> y = testing::cpu_forward(w, X, M);
    const std::vector<double> y64 = testing::float64_recompute(w, X, M);
    for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], y64[i], 0x1.0p-8 * std::fabs(y64[i]) + 1e-4);
    // The exact CPU forward agrees with the report's error estimate.
    const std::vector<double> y16 = testing::dense_output(to_f32_vector(in.tensor(l.module + ".weight")),
                                                          to_f32_vector(in.tensor(l.module + ".bias")), X, M, w.desc.N, w.desc.K);
    EXPECT_NEAR(testing::rel_error(y, y16), l.quality.svdquant, 0.1 * l.quality.svdquant);
  }
}

TEST(QuantizeSearch, RefinementNeverWorseAndGridIncludesNoSmoothing) {
  const auto L = testing::make_layer(128, 256, 48, HalfKind::BF16, 21, 5, 40.0f);
  QuantizeOptions opt;
  opt.rank = 16;
  SearchOptions s;
  s.alpha_grid = {0.5f, 0.75f};
  s.refine = 3;
  const QuantizedLayer r = quantize_linear_searched(L.W, L.N, L.K, L.bias, L.absmax, L.X, L.M, opt, s);
  ASSERT_EQ(r.quality.alpha_errors.size(), 3u);
  EXPECT_EQ(r.quality.alpha_errors[0].first, 0.0f);
  double best_alpha_err = 1e9;
  for (const auto& [a, e] : r.quality.alpha_errors) best_alpha_err = std::min(best_alpha_err, e);
  ASSERT_EQ(r.quality.refine_errors.size(), 4u);
  EXPECT_EQ(r.quality.refine_errors[0], best_alpha_err);
  EXPECT_LE(r.quality.svdquant, r.quality.refine_errors[0]);
  EXPECT_EQ(r.quality.svdquant, *std::min_element(r.quality.refine_errors.begin(), r.quality.refine_errors.end()));
  EXPECT_EQ(r.quality.svdquant, r.quality.refine_errors[size_t(r.quality.refine_kept)]);
  // The kept layer's exact error equals the reported one up to float32 summation order.
  const double exact = testing::rel_error(testing::cpu_forward(r.weights, L.X, L.M),
                                          testing::dense_output(L.W, L.bias, L.X, L.M, L.N, L.K));
  EXPECT_NEAR(exact, r.quality.svdquant, 0.02 * r.quality.svdquant);
  EXPECT_LT(r.quality.svdquant, r.quality.smooth_only);
  EXPECT_LT(r.quality.svdquant, r.quality.lowrank_only);
  EXPECT_LT(r.quality.svdquant, 0.5 * r.quality.rtn);
}

TEST(QuantizeModel, ThreeDimensionalWeightWhereALinearIsExpected) {
  TempDir tmp;
  const fs::path model = write_model(tmp.path, /*with_3d=*/true);
  ModelQuantizeOptions opt;
  opt.only = {"to_q", "to_v"};
  try {
    quantize_model(model, tmp.path / "out", opt);
    FAIL() << "3-D weight accepted";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("transformer_blocks.0.attn.to_v.weight: expected a 2-D"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[2, 128, 128]"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(tmp.path / "out"));
  // Without --only the 3-D tensor is not a linear and is copied through.
  EXPECT_NO_THROW(quantize_model(model, tmp.path / "out2", ModelQuantizeOptions{}));
}

TEST(QuantizeModel, KNotAMultipleOfTheGroup) {
  TempDir tmp;
  const fs::path model = write_model(tmp.path, false, /*odd_k=*/96);
  try {
    quantize_model(model, tmp.path / "out", ModelQuantizeOptions{});
    FAIL() << "K = 96 accepted for int4";
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("transformer_blocks.0.attn.to_out.0.weight: K = 96 is not a multiple of the int4 group size 64"),
              std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(tmp.path / "out"));
  ModelQuantizeOptions skip;
  skip.modules_to_not_convert = {"transformer_blocks.0.attn.to_out.0"};
  EXPECT_NO_THROW(quantize_model(model, tmp.path / "out", skip));
}

TEST(QuantizeModel, MissingCalibrationLayers) {
  TempDir tmp;
  const fs::path model = write_model(tmp.path);
  ModelQuantizeOptions opt;
  opt.calib = write_calib(tmp.path, model, {"transformer_blocks.0.attn.to_q", "transformer_blocks.0.ff.net.2"});
  try {
    quantize_model(model, tmp.path / "out", opt);
    FAIL() << "missing calibration layers accepted";
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("calib.safetensors: no calibration statistics"), std::string::npos) << msg;
    EXPECT_NE(msg.find("transformer_blocks.0.ff.net.0.proj"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("attn.to_q"), std::string::npos) << msg;
  }
  EXPECT_FALSE(fs::exists(tmp.path / "out"));
}

TEST(QuantizeCli, BadInputExitsNonZeroWithoutOutput) {
  TempDir tmp;
  const fs::path model = write_model(tmp.path, false, 96);
  const std::string cmd = std::string(SVDQUANT_CLI) + " quantize " + model.string() + " -o " + (tmp.path / "out").string() +
                          " -q 2> " + (tmp.path / "err.txt").string();
  const int rc = std::system(cmd.c_str());
  EXPECT_NE(rc, 0);
  std::ifstream err(tmp.path / "err.txt");
  const std::string text((std::istreambuf_iterator<char>(err)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("not a multiple of the int4 group size"), std::string::npos) << text;
  EXPECT_FALSE(fs::exists(tmp.path / "out"));
  // A good run through the CLI writes the folder and the report.
  const fs::path good = write_model(tmp.path / "g");
  const std::string ok = std::string(SVDQUANT_CLI) + " quantize " + good.string() + " -o " + (tmp.path / "ok").string() +
                         " --precision nvfp4 --rank 8 -q > /dev/null";
  EXPECT_EQ(std::system(ok.c_str()), 0);
  const Checkpoint out = Checkpoint::open(tmp.path / "ok");
  ASSERT_TRUE(out.quant_config());
  EXPECT_EQ(out.quant_config()->precision, Precision::NVFP4);
  EXPECT_EQ(out.quantized_layers().size(), 5u);  // nvfp4: no act_unsigned, to_k not skipped here
}

}  // namespace
}  // namespace svdquant
