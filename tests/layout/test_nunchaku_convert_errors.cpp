// Bad input to `svdquant convert`: every malformed nunchaku file is refused with an error naming
// the tensor (or key, or file), the CLI exits non-zero, and no output is left behind.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "nunchaku_builder.hpp"
#include "svdquant/error.hpp"
#include "svdquant/nunchaku_convert.hpp"
#include "test_util.hpp"

namespace svdquant {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using svdquant::testing::NunchakuFileBuilder;

const std::string kLayer = "transformer_blocks.0.out_proj";

int run_cli(const std::string& args, std::string* output) {
  const std::string cmd = std::string(SVDQUANT_CLI) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) output->append(buf, n);
  const int rc = pclose(p);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

class ConvertErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("svdq_convert_err_" + std::to_string(getpid()) + "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    b_.config = svdquant::testing::flux_config(2, 128);
    b_.add_fixture_layer(kLayer, "int4_k256_n256_r32");
    b_.add_unquantized(1);
  }
  void TearDown() override { fs::remove_all(dir_); }

  Tensor& tensor(const std::string& name) {
    for (auto& [n, t] : b_.tensors)
      if (n == name) return t;
    throw std::runtime_error("test: no tensor " + name);
  }
  void erase(const std::string& name) {
    std::erase_if(b_.tensors, [&](const auto& p) { return p.first == name; });
  }

  // The library throws E whose message contains every needle; the CLI exits 1 printing the same
  // message; neither leaves an output folder.
  template <class E>
  void expect_refused(const std::vector<std::string>& needles, const std::function<void(const fs::path&)>& write = {}) {
    const fs::path in = dir_ / "bad.safetensors", out = dir_ / "out";
    if (write)
      write(in);
    else
      b_.write(in);
    ConvertOptions o;
    o.progress = false;
    o.warn = [](const std::string&) {};
    try {
      convert_nunchaku_to_canonical(in, out, o);
      ADD_FAILURE() << "no error";
    } catch (const E& e) {
      for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << "'" << n << "' not in: " << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "wrong exception type: " << e.what();
    }
    EXPECT_FALSE(fs::exists(out));
    std::string cli;
    EXPECT_EQ(run_cli("convert -q " + in.string() + " -o " + out.string(), &cli), 1) << cli;
    EXPECT_NE(cli.find("error"), std::string::npos) << cli;
    EXPECT_NE(cli.find(needles.front()), std::string::npos) << cli;
    EXPECT_FALSE(fs::exists(out));
    // No temporary leftovers next to the output either.
    for (const auto& e : fs::directory_iterator(dir_)) EXPECT_EQ(e.path().filename().string().find("out"), std::string::npos) << e.path();
  }

  fs::path dir_;
  NunchakuFileBuilder b_;
};

TEST_F(ConvertErrors, ValidFileConverts) {  // the baseline every other test breaks
  const fs::path in = dir_ / "ok.safetensors";
  b_.write(in);
  std::string cli;
  EXPECT_EQ(run_cli("convert -q " + in.string() + " -o " + (dir_ / "ok").string(), &cli), 0) << cli;
  EXPECT_TRUE(fs::exists(dir_ / "ok" / "transformer" / "config.json"));
}

TEST_F(ConvertErrors, MissingLowRankTensor) {
  erase(kLayer + ".lora_up");
  expect_refused<FormatError>({kLayer + ".lora_up", "missing"});
}

TEST_F(ConvertErrors, MissingQweight) {
  erase(kLayer + ".qweight");
  expect_refused<FormatError>({kLayer + ".qweight", "missing"});
}

TEST_F(ConvertErrors, UnexpectedTensorInLayer) {
  b_.tensors.emplace_back(kLayer + ".wzero", Tensor::zeros(DType::BF16, {4}));
  expect_refused<FormatError>({kLayer + ".wzero", "unexpected"});
}

TEST_F(ConvertErrors, TwoSpellingsOfOneTensor) {
  b_.tensors.emplace_back(kLayer + ".smooth_factor", tensor(kLayer + ".smooth").clone());
  expect_refused<FormatError>({kLayer + ".smooth_factor", kLayer + ".smooth"});
}

TEST_F(ConvertErrors, WrongShape) {
  tensor(kLayer + ".bias") = Tensor::zeros(DType::BF16, {200});
  expect_refused<FormatError>({kLayer + ".bias", "[256]", "[200]"});
}

TEST_F(ConvertErrors, QweightNotPadded) {
  tensor(kLayer + ".qweight") = Tensor::zeros(DType::I8, {200, 128});
  expect_refused<FormatError>({kLayer + ".qweight", "multiples of 128"});
}

TEST_F(ConvertErrors, WrongDtype) {
  tensor(kLayer + ".smooth") = Tensor::zeros(DType::F32, {256});
  expect_refused<FormatError>({kLayer + ".smooth", "F32"});
}

TEST_F(ConvertErrors, Fp8ScalesInInt4File) {
  tensor(kLayer + ".wscales") = Tensor::zeros(DType::F8_E4M3, {16, 256});
  expect_refused<FormatError>({kLayer + ".wscales", "int4"});
}

TEST_F(ConvertErrors, RankMismatch) {
  tensor(kLayer + ".lora_down") = Tensor::zeros(DType::BF16, {256, 16});
  expect_refused<FormatError>({"rank mismatch", kLayer + ".lora_down", kLayer + ".lora_up"});
}

TEST_F(ConvertErrors, RankNotMultipleOf16) {
  tensor(kLayer + ".lora_down") = Tensor::zeros(DType::BF16, {256, 24});
  tensor(kLayer + ".lora_up") = Tensor::zeros(DType::BF16, {256, 24});
  expect_refused<FormatError>({kLayer + ".lora_up", "multiple of 16"});
}

TEST_F(ConvertErrors, UnknownPrecision) {
  b_.precision = "int8";
  expect_refused<ConfigError>({"unknown precision", "int8"});
}

TEST_F(ConvertErrors, MalformedConfigMetadata) {
  expect_refused<ConfigError>({"config", "JSON"}, [&](const fs::path& p) {
    auto md = b_.metadata();
    md["config"] = "{not json";
    write_safetensors(p, b_.tensors, md);
  });
}

TEST_F(ConvertErrors, TruncatedFile) {
  expect_refused<FormatError>({"bad.safetensors"}, [&](const fs::path& p) {
    b_.write(p);
    fs::resize_file(p, fs::file_size(p) - 1000);
  });
}

TEST_F(ConvertErrors, NotAFile) {
  expect_refused<FormatError>({"bad.safetensors"}, [&](const fs::path&) {});
}

// ------------------------------------------------------------- canonical -> nunchaku

TEST_F(ConvertErrors, InverseNeedsAModelClass) {
  const fs::path in = dir_ / "in.safetensors", folder = dir_ / "canonical";
  b_.write(in);
  ConvertOptions o;
  o.progress = false;
  convert_nunchaku_to_canonical(in, folder, o);
  // Drop what the forward conversion recorded: the folder no longer says what model it is.
  const fs::path cfg_path = folder / "transformer" / "config.json";
  json cfg = json::parse(std::ifstream(cfg_path));
  cfg.erase("_nunchaku");
  cfg.erase("_class_name");
  std::ofstream(cfg_path) << cfg.dump();
  std::string cli;
  EXPECT_EQ(run_cli("convert -q " + folder.string() + " --to nunchaku -o " + (dir_ / "back.safetensors").string(), &cli), 1);
  EXPECT_NE(cli.find("--model-class"), std::string::npos) << cli;
  EXPECT_FALSE(fs::exists(dir_ / "back.safetensors"));
  cli.clear();
  EXPECT_EQ(run_cli("convert -q " + folder.string() + " --to nunchaku --model-class NunchakuFluxTransformer2dModel -o " +
                        (dir_ / "back.safetensors").string(),
                    &cli),
            0)
      << cli;
  // A folder passed without --to nunchaku is refused with a hint.
  cli.clear();
  EXPECT_EQ(run_cli("convert -q " + folder.string() + " -o " + (dir_ / "x").string(), &cli), 1);
  EXPECT_NE(cli.find("--to nunchaku"), std::string::npos) << cli;
}

TEST_F(ConvertErrors, InverseRefusesActivationMismatch) {
  const fs::path in = dir_ / "in.safetensors", folder = dir_ / "canonical";
  b_.write(in);
  ConvertOptions o;
  o.progress = false;
  convert_nunchaku_to_canonical(in, folder, o);
  // Mark the (signed) out_proj as unsigned: nunchaku's FLUX would run it with signed inputs.
  const fs::path cfg_path = folder / "transformer" / "config.json";
  json cfg = json::parse(std::ifstream(cfg_path));
  cfg["quantization_config"]["act_unsigned_modules"] = json::array({kLayer});
  std::ofstream(cfg_path) << cfg.dump();
  try {
    convert_canonical_to_nunchaku(folder, dir_ / "back.safetensors", o);
    ADD_FAILURE() << "no error";
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find(kLayer), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir_ / "back.safetensors"));
}

}  // namespace
}  // namespace svdquant
