// A small tensor: dtype, shape, strides (in elements), device, and shared ownership of the bytes.
// The bytes may live on the heap, inside a memory-mapped file (safetensors, zero-copy), or in
// memory owned by someone else (a DLPack tensor, a CUDA allocation); `owner` keeps them alive.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace svdquant {

enum class DType : uint8_t { BOOL, U8, I8, I16, U16, I32, I64, F16, BF16, F32, F64, F8_E4M3 };

size_t dtype_size(DType t);
// The safetensors spelling: "BF16", "F8_E4M3", ...
std::string_view dtype_name(DType t);
std::optional<DType> parse_dtype(std::string_view name);

enum class DeviceType : uint8_t { CPU, CUDA };
struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  bool operator==(const Device&) const = default;
};

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[3, 4]"

class Tensor {
 public:
  Tensor() = default;
  // A new zero-filled, contiguous host tensor.
  static Tensor zeros(DType dtype, Shape shape);
  // A view of existing memory; `owner` (may be null) keeps it alive. Strides default to contiguous.
  static Tensor wrap(void* data, DType dtype, Shape shape, Device device = {},
                     std::shared_ptr<void> owner = nullptr, std::vector<int64_t> strides = {});

  bool defined() const { return data_ != nullptr || numel() == 0; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  const std::vector<int64_t>& strides() const { return strides_; }
  int64_t dim() const { return int64_t(shape_.size()); }
  int64_t size(int64_t i) const { return shape_.at(size_t(i < 0 ? i + dim() : i)); }
  int64_t numel() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  Device device() const { return device_; }
  bool is_contiguous() const;

  void* data() { return data_; }
  const void* data() const { return data_; }
  template <class T> T* data_as() { return static_cast<T*>(data_); }
  template <class T> const T* data_as() const { return static_cast<const T*>(data_); }
  const std::shared_ptr<void>& owner() const { return owner_; }

  // Same bytes, new shape (contiguous tensors only; numel must match).
  Tensor reshape(Shape shape) const;
  // A contiguous host copy.
  Tensor clone() const;

 private:
  void* data_ = nullptr;
  DType dtype_ = DType::F32;
  Shape shape_;
  std::vector<int64_t> strides_;
  Device device_;
  std::shared_ptr<void> owner_;
};

// Throws FormatError naming `what` unless t has exactly this dtype and shape.
void expect_tensor(const Tensor& t, std::string_view what, DType dtype, const Shape& shape);

// Element access for host tensors of the floating dtypes (F32, F64, F16, BF16, F8_E4M3), widened.
double element_as_double(const Tensor& t, int64_t flat_index);
// Widen a host tensor of any floating dtype to a contiguous float32 vector / float64 vector.
std::vector<float> to_f32_vector(const Tensor& t);
std::vector<double> to_f64_vector(const Tensor& t);

}  // namespace svdquant
