// The svdquant CLI end to end: a fixture as a canonical folder, `svdquant forward` reproduces y_ref;
// `inspect` lists it; bad input exits non-zero with a clear message and writes no output.
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "fixture_util.hpp"
#include "svdquant/checkpoint.hpp"

using namespace svdquant;
namespace fs = std::filesystem;

namespace {

struct CliResult {
  int code;
  std::string out;
};

CliResult run(const std::string& args) {
  std::string cmd = std::string(SVDQUANT_CLI) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

fs::path workdir() {
  fs::path d = fs::temp_directory_path() / ("svdq_cli_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

// The fixture as a one-layer canonical folder; returns the folder.
fs::path fixture_folder(const std::string& name, const std::string& prefix) {
  test::Fixture f = test::load_fixture(name);
  LayerWeights w = f.layer;
  w.prefix = prefix;
  QuantConfig q;
  q.rank = int(w.desc.R);
  q.precision = w.desc.precision;
  if (w.desc.act_unsigned) q.act_unsigned_modules = {prefix};
  fs::path dir = workdir() / name;
  fs::remove_all(dir);
  write_checkpoint_folder(dir, R"({"_class_name":"FluxTransformer2DModel"})", q, layer_tensors(w));
  write_safetensors(workdir() / (name + "_x.safetensors"), {{"x", f.file.tensor("forward.x")}});
  return dir;
}

}  // namespace

// --activations: auto (the default) runs 4-bit activations on the CPU and says so; fp8 gives
// another result; an unknown mode is a usage error naming the accepted values.
TEST(Cli, ForwardActivationModes) {
  const char* name = "int4_k256_n256_r32";
  fs::path dir = fixture_folder(name, "blocks.0.proj");
  const std::string x = (workdir() / (std::string(name) + "_x.safetensors")).string();
  auto forward = [&](const std::string& mode, const std::string& out) {
    fs::remove(workdir() / out);
    return run("forward --backend cpu --model " + dir.string() + " --layer blocks.0.proj --input " + x + " --output " +
               (workdir() / out).string() + (mode.empty() ? "" : " --activations " + mode));
  };
  const CliResult dflt = forward("", "y_default.safetensors");
  ASSERT_EQ(dflt.code, 0) << dflt.out;
  EXPECT_NE(dflt.out.find("activations=checkpoint"), std::string::npos) << dflt.out;
  const CliResult ck = forward("checkpoint", "y_checkpoint.safetensors");
  ASSERT_EQ(ck.code, 0) << ck.out;
  const CliResult f8 = forward("fp8", "y_fp8.safetensors");
  ASSERT_EQ(f8.code, 0) << f8.out;
  EXPECT_NE(f8.out.find("activations=fp8"), std::string::npos) << f8.out;
  const Tensor yd = SafetensorsFile::open(workdir() / "y_default.safetensors").tensor("y");
  const Tensor yc = SafetensorsFile::open(workdir() / "y_checkpoint.safetensors").tensor("y");
  const Tensor y8 = SafetensorsFile::open(workdir() / "y_fp8.safetensors").tensor("y");
  ASSERT_EQ(yd.nbytes(), yc.nbytes());
  EXPECT_EQ(std::memcmp(yd.data(), yc.data(), yd.nbytes()), 0) << "auto on the CPU is checkpoint";
  EXPECT_NE(std::memcmp(y8.data(), yc.data(), yc.nbytes()), 0) << "fp8 is another mode";
  const CliResult bad = forward("int2", "y_bad.safetensors");
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.out.find("auto, checkpoint, fp8"), std::string::npos) << bad.out;
  EXPECT_FALSE(fs::exists(workdir() / "y_bad.safetensors"));
}

TEST(Cli, ForwardReproducesFixtureReference) {
  for (const char* name : test::kFixtures) {
    fs::path dir = fixture_folder(name, "transformer_blocks.0.ff.net.2");
    fs::path y = workdir() / (std::string(name) + "_y.safetensors");
    fs::remove(y);
    CliResult r = run("forward --model " + dir.string() + " --layer transformer_blocks.0.ff.net.2 --input " +
                (workdir() / (std::string(name) + "_x.safetensors")).string() + " --output " + y.string() + " --backend cpu");
    ASSERT_EQ(r.code, 0) << r.out;
    Tensor out = SafetensorsFile::open(y).tensor("y");
    test::Fixture f = test::load_fixture(name);
    // y_ref is the float64 result rounded to T: equal, or 1 ulp off where float32 sums land on the
    // other side of a rounding boundary.
    const auto ulps = test::ulp_diff_histogram(out, f.file.tensor("forward.y_ref"));
    EXPECT_EQ(ulps[2], 0) << name;
    EXPECT_GT(ulps[0], out.numel() * 9 / 10) << name;
    EXPECT_LT(test::rel_l2(out, f.file.tensor("forward.y_ref_f64")), 3e-3) << name;
  }
}

TEST(Cli, InspectListsLayers) {
  fs::path dir = fixture_folder("nvfp4_k256_n256_r32", "blocks.0.attn.to_q");
  CliResult r = run("inspect " + dir.string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("blocks.0.attn.to_q"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("nvfp4"), std::string::npos) << r.out;
  CliResult j = run("inspect --json " + dir.string());
  ASSERT_EQ(j.code, 0);
  auto parsed = nlohmann::json::parse(j.out);
  EXPECT_EQ(parsed["quantized_layers"][0]["rank"], 32);
  EXPECT_EQ(parsed["quantized_layers"][0]["K"], 256);
}

TEST(Cli, BadInputGivesClearErrorsAndNoOutput) {
  fs::path dir = fixture_folder("int4_k256_n256_r32", "blocks.0.proj");
  fs::path x = workdir() / "int4_k256_n256_r32_x.safetensors";
  fs::path y = workdir() / "bad_y.safetensors";
  fs::remove(y);
  CliResult wrong_layer = run("forward --model " + dir.string() + " --layer nope --input " + x.string() + " --output " + y.string());
  EXPECT_EQ(wrong_layer.code, 1);
  EXPECT_NE(wrong_layer.out.find("no quantized layer 'nope'"), std::string::npos) << wrong_layer.out;
  CliResult bad_mode = run("forward --model " + dir.string() + " --layer blocks.0.proj --input " + x.string() + " --output " + y.string() +
                     " --accumulate fp64");
  EXPECT_NE(bad_mode.code, 0);
  EXPECT_NE(bad_mode.out.find("--accumulate: unknown value 'fp64'"), std::string::npos) << bad_mode.out;
  // A truncated input file.
  fs::path trunc = workdir() / "trunc_x.safetensors";
  fs::copy_file(x, trunc, fs::copy_options::overwrite_existing);
  fs::resize_file(trunc, fs::file_size(trunc) - 100);
  CliResult t = run("forward --model " + dir.string() + " --layer blocks.0.proj --input " + trunc.string() + " --output " + y.string());
  EXPECT_EQ(t.code, 1);
  EXPECT_NE(t.out.find("outside the data region"), std::string::npos) << t.out;
  // Wrong input width.
  fs::path narrow = workdir() / "narrow_x.safetensors";
  write_safetensors(narrow, {{"x", Tensor::zeros(DType::BF16, {2, 128})}});
  CliResult w = run("forward --model " + dir.string() + " --layer blocks.0.proj --input " + narrow.string() + " --output " + y.string());
  EXPECT_EQ(w.code, 1);
  EXPECT_NE(w.out.find("expected [..., 256]"), std::string::npos) << w.out;
  EXPECT_FALSE(fs::exists(y));
  CliResult missing = run("inspect " + (workdir() / "nothing-here").string());
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.out.find("no such file or folder"), std::string::npos);
}

TEST(Cli, HelpAndUsage) {
  EXPECT_EQ(run("--help").code, 0);
  for (const char* sub : {"inspect", "forward", "demo"}) {
    CliResult r = run(std::string(sub) + " --help");
    EXPECT_EQ(r.code, 0) << sub;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << r.out;
  }
  EXPECT_EQ(run("").code, 2);
  EXPECT_EQ(run("frobnicate").code, 2);
  EXPECT_EQ(run("forward --model x").code, 2);
}
