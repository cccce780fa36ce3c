#include "svdquant/tensor.hpp"

#include <cstring>
#include <limits>
#include <sstream>

#include "svdquant/error.hpp"
#include "svdquant/float_formats.hpp"

namespace svdquant {

namespace {
struct DTypeInfo {
  DType t;
  std::string_view name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::BOOL, "BOOL", 1}, {DType::U8, "U8", 1},   {DType::I8, "I8", 1},
    {DType::I16, "I16", 2},   {DType::U16, "U16", 2}, {DType::I32, "I32", 4},
    {DType::I64, "I64", 8},   {DType::F16, "F16", 2}, {DType::BF16, "BF16", 2},
    {DType::F32, "F32", 4},   {DType::F64, "F64", 8}, {DType::F8_E4M3, "F8_E4M3", 1},
};
const DTypeInfo& info_of(DType t) {
  for (const auto& d : kDTypes)
    if (d.t == t) return d;
  throw Error("unknown dtype tag " + std::to_string(int(t)));
}
std::vector<int64_t> contiguous_strides(const Shape& shape) {
  std::vector<int64_t> s(shape.size());
  int64_t acc = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}
}  // namespace

size_t dtype_size(DType t) { return info_of(t).size; }
std::string_view dtype_name(DType t) { return info_of(t).name; }
std::optional<DType> parse_dtype(std::string_view name) {
  for (const auto& d : kDTypes)
    if (d.name == name) return d.t;
  return std::nullopt;
}

std::string shape_str(const Shape& s) {
  std::ostringstream o;
  o << '[';
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << ']';
  return o.str();
}

Tensor Tensor::zeros(DType dtype, Shape shape) {
  Tensor t;
  for (int64_t d : shape)
    if (d < 0) throw Error("negative dimension in shape " + shape_str(shape));
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.strides_ = contiguous_strides(t.shape_);
  size_t bytes = std::max<size_t>(t.nbytes(), 1);
  std::shared_ptr<uint8_t[]> buf(new uint8_t[bytes]());
  t.data_ = buf.get();
  t.owner_ = std::shared_ptr<void>(buf, buf.get());
  return t;
}

Tensor Tensor::wrap(void* data, DType dtype, Shape shape, Device device, std::shared_ptr<void> owner,
                    std::vector<int64_t> strides) {
  Tensor t;
  t.data_ = data;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.strides_ = strides.empty() ? contiguous_strides(t.shape_) : std::move(strides);
  if (t.strides_.size() != t.shape_.size()) throw Error("strides and shape differ in rank");
  t.device_ = device;
  t.owner_ = std::move(owner);
  return t;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

bool Tensor::is_contiguous() const {
  auto c = contiguous_strides(shape_);
  for (size_t i = 0; i < shape_.size(); ++i)
    if (shape_[i] != 1 && strides_[i] != c[i]) return false;
  return true;
}

Tensor Tensor::reshape(Shape shape) const {
  if (!is_contiguous()) throw Error("reshape of a non-contiguous tensor");
  Tensor t = *this;
  t.shape_ = std::move(shape);
  if (t.numel() != numel())
    throw Error("cannot reshape " + shape_str(shape_) + " to " + shape_str(t.shape_));
  t.strides_ = contiguous_strides(t.shape_);
  return t;
}

Tensor Tensor::clone() const {
  if (device_.type != DeviceType::CPU) throw Error("clone() of a device tensor: copy it to the host first");
  Tensor t = zeros(dtype_, shape_);
  if (is_contiguous()) {
    if (nbytes()) std::memcpy(t.data_, data_, nbytes());
    return t;
  }
  const size_t es = dtype_size(dtype_);
  const int64_t n = numel();
  std::vector<int64_t> idx(shape_.size(), 0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t off = 0;
    for (size_t d = 0; d < idx.size(); ++d) off += idx[d] * strides_[d];
    std::memcpy(static_cast<uint8_t*>(t.data_) + size_t(i) * es, static_cast<const uint8_t*>(data_) + off * int64_t(es), es);
    for (size_t d = idx.size(); d-- > 0;) {
      if (++idx[d] < shape_[d]) break;
      idx[d] = 0;
    }
  }
  return t;
}

void expect_tensor(const Tensor& t, std::string_view what, DType dtype, const Shape& shape) {
  if (t.dtype() != dtype || t.shape() != shape) {
    throw FormatError(std::string(what) + ": expected " + std::string(dtype_name(dtype)) + " " +
                      shape_str(shape) + ", found " + std::string(dtype_name(t.dtype())) + " " +
                      shape_str(t.shape()));
  }
  if (!t.is_contiguous()) throw FormatError(std::string(what) + ": expected a contiguous tensor");
}

double element_as_double(const Tensor& t, int64_t i) {
  const void* p = t.data();
  switch (t.dtype()) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::F64: return static_cast<const double*>(p)[i];
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::F16: return fp16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::F8_E4M3: return e4m3_to_f32(static_cast<const uint8_t*>(p)[i]);
    case DType::I8: return static_cast<const int8_t*>(p)[i];
    case DType::U8: return static_cast<const uint8_t*>(p)[i];
    case DType::I32: return static_cast<const int32_t*>(p)[i];
    case DType::I64: return double(static_cast<const int64_t*>(p)[i]);
    default: throw Error("element_as_double: unsupported dtype " + std::string(dtype_name(t.dtype())));
  }
}

std::vector<float> to_f32_vector(const Tensor& t) {
  Tensor c = t.is_contiguous() ? t : t.clone();
  std::vector<float> out(size_t(c.numel()));
  for (int64_t i = 0; i < c.numel(); ++i) out[size_t(i)] = float(element_as_double(c, i));
  return out;
}

std::vector<double> to_f64_vector(const Tensor& t) {
  Tensor c = t.is_contiguous() ? t : t.clone();
  std::vector<double> out(size_t(c.numel()));
  for (int64_t i = 0; i < c.numel(); ++i) out[size_t(i)] = element_as_double(c, i);
  return out;
}

}  // namespace svdquant
