// safetensors reader/writer: round trip, and every malformed header gives a clear error.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "svdquant/error.hpp"
#include "svdquant/safetensors.hpp"

using namespace svdquant;
namespace fs = std::filesystem;

namespace {

fs::path tmpdir() {
  fs::path d = fs::temp_directory_path() / ("svdq_st_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

// Writes a raw safetensors file: header text (length-prefixed) + `data_bytes` bytes of data.
fs::path write_raw(const std::string& name, const std::string& header, size_t data_bytes, int64_t declared_len = -1) {
  fs::path p = tmpdir() / name;
  std::ofstream o(p, std::ios::binary);
  uint64_t n = declared_len < 0 ? header.size() : uint64_t(declared_len);
  for (int i = 0; i < 8; ++i) o.put(char(n >> (8 * i)));
  o << header;
  o << std::string(data_bytes, '\x01');
  return p;
}

std::string error_of(const fs::path& p) {
  try {
    SafetensorsFile::open(p);
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Safetensors, RoundTripWithMetadata) {
  Tensor a = Tensor::zeros(DType::F32, {2, 3});
  for (int i = 0; i < 6; ++i) a.data_as<float>()[i] = float(i) * 0.5f;
  Tensor b = Tensor::zeros(DType::I8, {5});
  for (int i = 0; i < 5; ++i) b.data_as<int8_t>()[i] = int8_t(-i);
  Tensor e = Tensor::zeros(DType::F8_E4M3, {0});
  fs::path p = tmpdir() / "rt.safetensors";
  write_safetensors(p, {{"a", a}, {"b", b}, {"empty", e}}, {{"k", "v"}});
  SafetensorsFile f = SafetensorsFile::open(p);
  EXPECT_EQ(f.metadata().at("k"), "v");
  EXPECT_EQ(f.names(), (std::vector<std::string>{"a", "b", "empty"}));
  Tensor a2 = f.tensor("a");
  EXPECT_EQ(a2.shape(), (Shape{2, 3}));
  EXPECT_EQ(a2.dtype(), DType::F32);
  EXPECT_EQ(std::memcmp(a2.data(), a.data(), a.nbytes()), 0);
  EXPECT_EQ(std::memcmp(f.tensor("b").data(), b.data(), 5), 0);
  EXPECT_EQ(f.tensor("empty").numel(), 0);
  EXPECT_THROW(f.tensor("missing"), FormatError);
  // The view keeps the mapping alive after the file object is gone.
  Tensor keep = SafetensorsFile::open(p).tensor("a");
  EXPECT_EQ(keep.data_as<float>()[5], 2.5f);
}

TEST(Safetensors, ReadsTheFixtures) {
  SafetensorsFile f = SafetensorsFile::open(fs::path(SVDQUANT_TEST_DATA) / "nvfp4_k256_n256_r32.safetensors");
  EXPECT_EQ(f.info("canonical.wscales").dtype, DType::F8_E4M3);
  EXPECT_EQ(f.info("forward.y_ref_f64").dtype, DType::F64);
  EXPECT_TRUE(f.metadata().count("case"));
}

TEST(Safetensors, Truncated) {
  Tensor a = Tensor::zeros(DType::F32, {64});
  fs::path p = tmpdir() / "trunc.safetensors";
  write_safetensors(p, {{"a", a}});
  fs::resize_file(p, fs::file_size(p) - 4);
  EXPECT_NE(error_of(p).find("outside the data region"), std::string::npos) << error_of(p);
  fs::resize_file(p, 5);
  EXPECT_NE(error_of(p).find("too short"), std::string::npos) << error_of(p);
}

TEST(Safetensors, HugeHeaderLength) {
  auto p = write_raw("huge.safetensors", "{}", 0, int64_t(1) << 40);
  EXPECT_NE(error_of(p).find("exceeds the limit"), std::string::npos) << error_of(p);
  auto q = write_raw("past.safetensors", "{}", 0, 1000);
  EXPECT_NE(error_of(q).find("runs past the end"), std::string::npos) << error_of(q);
}

TEST(Safetensors, BadJson) {
  auto p = write_raw("badjson.safetensors", "{\"a\": {\"dtype\": ", 0);
  EXPECT_NE(error_of(p).find("not valid JSON"), std::string::npos) << error_of(p);
  auto q = write_raw("array.safetensors", "[1, 2]", 0);
  EXPECT_NE(error_of(q).find("not a JSON object"), std::string::npos) << error_of(q);
}

TEST(Safetensors, OverlappingOffsets) {
  auto p = write_raw("overlap.safetensors",
                     R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12);
  EXPECT_NE(error_of(p).find("overlaps"), std::string::npos) << error_of(p);
}

TEST(Safetensors, OutOfRangeOffsets) {
  auto p = write_raw("range.safetensors", R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8);
  EXPECT_NE(error_of(p).find("'a'"), std::string::npos);
  EXPECT_NE(error_of(p).find("outside the data region"), std::string::npos) << error_of(p);
  auto q = write_raw("reversed.safetensors", R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8);
  EXPECT_NE(error_of(q).find("begin > end"), std::string::npos) << error_of(q);
}

TEST(Safetensors, DtypeShapeMismatch) {
  auto p = write_raw("mismatch.safetensors", R"({"w":{"dtype":"BF16","shape":[3,3],"data_offsets":[0,16]}})", 16);
  EXPECT_NE(error_of(p).find("tensor 'w': BF16 [3, 3] needs 18 bytes but data_offsets give 16"), std::string::npos) << error_of(p);
}

TEST(Safetensors, HolesUnknownDtypesAndBadFields) {
  auto hole = write_raw("hole.safetensors", R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", 8);
  EXPECT_NE(error_of(hole).find("hole"), std::string::npos) << error_of(hole);
  auto dt = write_raw("dtype.safetensors", R"({"a":{"dtype":"F4","shape":[4],"data_offsets":[0,4]}})", 4);
  EXPECT_NE(error_of(dt).find("unsupported dtype 'F4'"), std::string::npos) << error_of(dt);
  auto neg = write_raw("neg.safetensors", R"({"a":{"dtype":"U8","shape":[-4],"data_offsets":[0,4]}})", 4);
  EXPECT_NE(error_of(neg).find("negative"), std::string::npos) << error_of(neg);
  auto miss = write_raw("miss.safetensors", R"({"a":{"dtype":"U8","shape":[4]}})", 4);
  EXPECT_NE(error_of(miss).find("missing 'data_offsets'"), std::string::npos) << error_of(miss);
  auto md = write_raw("md.safetensors", R"({"__metadata__":{"x":1}})", 0);
  EXPECT_NE(error_of(md).find("__metadata__.x is not a string"), std::string::npos) << error_of(md);
  auto huge = write_raw("hugeshape.safetensors", R"({"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8);
  EXPECT_NE(error_of(huge).find("too large"), std::string::npos) << error_of(huge);
  EXPECT_NE(error_of(tmpdir() / "does-not-exist.safetensors").find("cannot open"), std::string::npos);
}

TEST(Safetensors, WriterLeavesNoPartialFile) {
  fs::path p = tmpdir() / "never.safetensors";
  fs::remove(p);
  Tensor dev = Tensor::wrap(reinterpret_cast<void*>(0x1000), DType::F32, {4}, Device{DeviceType::CUDA, 0});
  EXPECT_THROW(write_safetensors(p, {{"a", Tensor::zeros(DType::F32, {4})}, {"b", dev}}), FormatError);
  EXPECT_THROW(write_safetensors(p, {{"a", Tensor::zeros(DType::F32, {4})}, {"a", Tensor::zeros(DType::F32, {4})}}), FormatError);
  EXPECT_FALSE(fs::exists(p));
  EXPECT_THROW(write_safetensors(tmpdir() / "no-such-dir" / "x.safetensors", {}), Error);
  for (const auto& e : fs::directory_iterator(tmpdir()))
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
}
