#include <gtest/gtest.h>

#include "svdquant/error.hpp"
#include "svdquant/float_formats.hpp"
#include "svdquant/tensor.hpp"

using namespace svdquant;

TEST(Tensor, ZerosShapeAndBytes) {
  Tensor t = Tensor::zeros(DType::BF16, {3, 4});
  EXPECT_EQ(t.numel(), 12);
  EXPECT_EQ(t.nbytes(), 24u);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.strides(), (std::vector<int64_t>{4, 1}));
  for (int i = 0; i < 12; ++i) EXPECT_EQ(t.data_as<uint16_t>()[i], 0);
  EXPECT_THROW(Tensor::zeros(DType::F32, {2, -1}), Error);
}

TEST(Tensor, DTypeNames) {
  for (auto t : {DType::BOOL, DType::U8, DType::I8, DType::I16, DType::U16, DType::I32, DType::I64, DType::F16, DType::BF16,
                 DType::F32, DType::F64, DType::F8_E4M3})
    EXPECT_EQ(parse_dtype(dtype_name(t)), t);
  EXPECT_FALSE(parse_dtype("F4").has_value());
  EXPECT_EQ(dtype_size(DType::F8_E4M3), 1u);
  EXPECT_EQ(dtype_size(DType::F64), 8u);
}

TEST(Tensor, ReshapeAndStridedClone) {
  Tensor t = Tensor::zeros(DType::F32, {2, 3});
  for (int i = 0; i < 6; ++i) t.data_as<float>()[i] = float(i);
  Tensor r = t.reshape({3, 2});
  EXPECT_EQ(r.shape(), (Shape{3, 2}));
  EXPECT_EQ(r.data(), t.data());
  EXPECT_THROW(t.reshape({4, 2}), Error);
  // The transpose as a strided view: clone() gathers it.
  Tensor tr = Tensor::wrap(t.data(), DType::F32, {3, 2}, {}, t.owner(), {1, 3});
  EXPECT_FALSE(tr.is_contiguous());
  Tensor c = tr.clone();
  const float want[6] = {0, 3, 1, 4, 2, 5};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(c.data_as<float>()[i], want[i]);
}

TEST(Tensor, ExpectTensorNamesTheProblem) {
  Tensor t = Tensor::zeros(DType::F16, {4});
  EXPECT_NO_THROW(expect_tensor(t, "layer.bias", DType::F16, {4}));
  try {
    expect_tensor(t, "layer.bias", DType::BF16, {4});
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("layer.bias: expected BF16 [4], found F16 [4]"), std::string::npos) << e.what();
  }
}

TEST(Tensor, WideningAccessors) {
  Tensor t = Tensor::zeros(DType::BF16, {2});
  t.data_as<uint16_t>()[0] = f32_to_bf16(1.5f);
  t.data_as<uint16_t>()[1] = f32_to_bf16(-3.0f);
  EXPECT_EQ(to_f32_vector(t), (std::vector<float>{1.5f, -3.0f}));
  EXPECT_EQ(element_as_double(t, 1), -3.0);
}
