#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "svdquant/config.hpp"
#include "svdquant/error.hpp"

using namespace svdquant;

namespace {
std::string error_of(const std::string& json, const std::string& component = "transformer") {
  try {
    parse_quantization_config(json, component);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Config, FlatForm) {
  auto c = parse_quantization_config(R"({"quant_method":"svdquant","rank":32,"precision":"int4","act_unsigned":false,
      "act_unsigned_modules":["ff.net.2"],"modules_to_not_convert":["proj_out","x_embedder"]})");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->rank, 32);
  EXPECT_EQ(c->precision, Precision::INT4);
  EXPECT_TRUE(c->layer_act_unsigned("transformer_blocks.3.ff.net.2"));
  EXPECT_FALSE(c->layer_act_unsigned("transformer_blocks.3.ff.net.0.proj"));
  EXPECT_TRUE(c->layer_skipped("proj_out"));
  EXPECT_TRUE(c->layer_skipped("x_embedder.linear"));
  EXPECT_FALSE(c->layer_skipped("transformer_blocks.0.attn.to_out.0"));
  // to_json round-trips.
  auto again = parse_quantization_config(c->to_json());
  EXPECT_EQ(again->act_unsigned_modules, c->act_unsigned_modules);
  EXPECT_EQ(again->modules_to_not_convert, c->modules_to_not_convert);
}

TEST(Config, PerComponentForm) {
  const std::string j = R"({"default":{"quant_method":"svdquant","rank":128,"precision":"nvfp4"},"text_encoder":null})";
  auto t = parse_quantization_config(j, "transformer");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->precision, Precision::NVFP4);
  EXPECT_EQ(t->rank, 128);
  EXPECT_FALSE(parse_quantization_config(j, "text_encoder"));
  auto own = parse_quantization_config(R"({"default":null,"transformer":{"quant_method":"svdquant","rank":16,"precision":"int4"}})");
  ASSERT_TRUE(own);
  EXPECT_EQ(own->rank, 16);
  EXPECT_FALSE(parse_quantization_config(R"({"default":null})"));
}

TEST(Config, ErrorsNameTheKey) {
  EXPECT_NE(error_of(R"({"rank":32,"precision":"int4"})").find("missing"), std::string::npos);
  EXPECT_NE(error_of(R"({"quant_method":"awq","rank":32,"precision":"int4"})").find("quant_method"), std::string::npos);
  EXPECT_NE(error_of(R"({"quant_method":"svdquant","precision":"int4"})").find("quantization_config.rank: missing"), std::string::npos);
  EXPECT_NE(error_of(R"({"quant_method":"svdquant","rank":"32","precision":"int4"})").find(".rank"), std::string::npos);
  EXPECT_NE(error_of(R"({"quant_method":"svdquant","rank":32,"precision":"int3"})").find("precision: unknown value 'int3'"), std::string::npos);
  EXPECT_NE(error_of(R"({"quant_method":"svdquant","rank":32,"precision":"int4","act_unsigned":"yes"})").find("act_unsigned"), std::string::npos);
  EXPECT_NE(error_of(R"({"quant_method":"svdquant","rank":32,"precision":"int4","modules_to_not_convert":[1]})").find("modules_to_not_convert"), std::string::npos);
  EXPECT_NE(error_of(R"({"quant_method":"svdquant","rank":32,"precision":"nvfp4","act_unsigned":true})").find("int4 only"), std::string::npos);
  EXPECT_NE(error_of(R"({"default":{"quant_method":"svdquant","precision":"int4"}})").find("quantization_config.default.rank"), std::string::npos);
  EXPECT_NE(error_of(R"({"other":1})").find("neither"), std::string::npos);
  EXPECT_NE(error_of("{not json").find("invalid JSON"), std::string::npos);
}

TEST(Config, ModuleMatching) {
  EXPECT_TRUE(module_matches("proj_out", "proj_out"));
  EXPECT_TRUE(module_matches("single_transformer_blocks", "single_transformer_blocks.3.proj_mlp"));
  EXPECT_TRUE(module_matches("ff.net.2", "transformer_blocks.7.ff.net.2"));
  EXPECT_TRUE(module_matches("transformer_blocks.*.ff_context.net.2", "transformer_blocks.12.ff_context.net.2"));
  EXPECT_FALSE(module_matches("ff.net.2", "transformer_blocks.7.ff.net.20"));
  EXPECT_FALSE(module_matches("proj", "proj_out"));
  EXPECT_FALSE(module_matches("", "proj_out"));
}

TEST(Config, ReadsConfigFile) {
  auto p = std::filesystem::temp_directory_path() / ("svdq_cfg_" + std::to_string(::getpid()) + ".json");
  std::ofstream(p) << R"({"_class_name":"FluxTransformer2DModel","quantization_config":{"quant_method":"svdquant","rank":32,"precision":"int4"}})";
  auto c = read_quantization_config_file(p.string());
  ASSERT_TRUE(c);
  EXPECT_EQ(c->rank, 32);
  std::ofstream(p) << R"({"quantization_config":{"quant_method":"svdquant","precision":"int4"}})";
  try {
    read_quantization_config_file(p.string());
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(p.string()), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("rank"), std::string::npos);
  }
  std::ofstream(p) << R"({"_class_name":"X"})";
  EXPECT_FALSE(read_quantization_config_file(p.string()));
  std::filesystem::remove(p);
}
