#include "arrays.hpp"

#include "svdquant/error.hpp"

namespace nb = nanobind;
using nb::dlpack::dtype_code;

namespace svdquant::python {
namespace {

std::optional<DType> to_dtype(nb::dlpack::dtype d) {
  if (d.lanes != 1) return std::nullopt;
  switch (dtype_code(d.code)) {
    case dtype_code::Bool: return d.bits == 8 ? std::optional(DType::BOOL) : std::nullopt;
    case dtype_code::Int:
      if (d.bits == 8) return DType::I8;
      if (d.bits == 16) return DType::I16;
      if (d.bits == 32) return DType::I32;
      if (d.bits == 64) return DType::I64;
      return std::nullopt;
    case dtype_code::UInt:
      if (d.bits == 8) return DType::U8;
      if (d.bits == 16) return DType::U16;
      return std::nullopt;
    case dtype_code::Float:
      if (d.bits == 16) return DType::F16;
      if (d.bits == 32) return DType::F32;
      if (d.bits == 64) return DType::F64;
      return std::nullopt;
    case dtype_code::Bfloat: return d.bits == 16 ? std::optional(DType::BF16) : std::nullopt;
    case dtype_code::Float8_E4M3FN: return d.bits == 8 ? std::optional(DType::F8_E4M3) : std::nullopt;
    default: return std::nullopt;
  }
}

nb::dlpack::dtype numpy_dtype(DType t) {
  switch (t) {
    case DType::BOOL: return nb::dtype<bool>();
    case DType::U8: return nb::dtype<uint8_t>();
    case DType::I8: return nb::dtype<int8_t>();
    case DType::I16: return nb::dtype<int16_t>();
    case DType::U16: return nb::dtype<uint16_t>();
    case DType::I32: return nb::dtype<int32_t>();
    case DType::I64: return nb::dtype<int64_t>();
    case DType::F16: return {uint8_t(dtype_code::Float), 16, 1};
    case DType::BF16: return nb::dtype<uint16_t>();  // bits
    case DType::F32: return nb::dtype<float>();
    case DType::F64: return nb::dtype<double>();
    case DType::F8_E4M3: return nb::dtype<uint8_t>();  // bits
  }
  return nb::dtype<uint8_t>();
}

Tensor make_view(void* data, nb::dlpack::dtype dt, size_t ndim, const int64_t* shape, const int64_t* strides, int dev_type,
                 int dev_id, const std::string& what, std::optional<DType> as) {
  std::optional<DType> t = to_dtype(dt);
  if (as) {
    if (dt.bits != 16 || dt.lanes != 1 ||
        !(dtype_code(dt.code) == dtype_code::UInt || dtype_code(dt.code) == dtype_code::Int || t == as))
      throw FormatError(what + ": dtype='" + half_dtype_str(*as) + "' reinterprets 16-bit integer bits (uint16), but the array is " +
                        dtype_str(dt));
    t = as;
  }
  if (!t) throw FormatError(what + ": unsupported dtype " + dtype_str(dt));
  Device dev;
  if (dev_type == nb::device::cpu::value) {
    dev = {DeviceType::CPU, 0};
  } else if (dev_type == nb::device::cuda::value) {
    dev = {DeviceType::CUDA, dev_id};
  } else {
    throw UnsupportedError(what + ": arrays on " + device_str(dev_type, dev_id) + " are not supported (CPU or CUDA only)");
  }
  Shape sh(shape, shape + ndim);
  std::vector<int64_t> st(strides, strides + ndim);
  return Tensor::wrap(data, *t, std::move(sh), dev, nullptr, std::move(st));
}

}  // namespace

std::string dtype_str(nb::dlpack::dtype d) {
  std::string base;
  switch (dtype_code(d.code)) {
    case dtype_code::Int: base = "int"; break;
    case dtype_code::UInt: base = "uint"; break;
    case dtype_code::Float: base = "float"; break;
    case dtype_code::Bfloat: base = "bfloat"; break;
    case dtype_code::Complex: base = "complex"; break;
    case dtype_code::Bool: return "bool";
    case dtype_code::Float8_E4M3FN: return "float8_e4m3fn";
    case dtype_code::Float8_E5M2: return "float8_e5m2";
    default: base = "dtype" + std::to_string(int(d.code)) + "_"; break;
  }
  std::string s = base + std::to_string(d.bits);
  if (d.lanes != 1) s += "x" + std::to_string(d.lanes);
  return s;
}

std::string device_str(int device_type, int device_id) {
  if (device_type == nb::device::cpu::value) return "cpu";
  if (device_type == nb::device::cuda::value) return "cuda:" + std::to_string(device_id);
  if (device_type == nb::device::cuda_host::value) return "cuda pinned host memory";
  if (device_type == nb::device::cuda_managed::value) return "cuda managed memory";
  return "DLPack device type " + std::to_string(device_type);
}

DType parse_half_dtype(const std::string& s, const char* what) {
  if (s == "bfloat16") return DType::BF16;
  if (s == "float16") return DType::F16;
  throw ConfigError(std::string(what) + ": unknown value '" + s + "' (accepted: bfloat16, float16)");
}

std::string half_dtype_str(DType t) {
  if (t == DType::BF16) return "bfloat16";
  if (t == DType::F16) return "float16";
  return std::string(dtype_name(t));
}

Tensor view(const InArray& a, const std::string& what, std::optional<DType> as) {
  return make_view(const_cast<void*>(a.data()), a.dtype(), a.ndim(), a.shape_ptr(), a.stride_ptr(), a.device_type(),
                   a.device_id(), what, as);
}

Tensor view_out(const OutArray& a, const std::string& what, std::optional<DType> as) {
  return make_view(a.data(), a.dtype(), a.ndim(), a.shape_ptr(), a.stride_ptr(), a.device_type(), a.device_id(), what, as);
}

nb::object to_numpy(const Tensor& t, bool writable) {
  if (t.device().type != DeviceType::CPU) throw Error("to_numpy: a device tensor");
  auto* keep = new Tensor(t);
  nb::capsule owner(keep, [](void* p) noexcept { delete static_cast<Tensor*>(p); });
  std::vector<size_t> shape(t.shape().begin(), t.shape().end());
  const std::vector<int64_t>& strides = t.strides();
  void* data = keep->data();
  if (writable)
    return nb::ndarray<nb::numpy>(data, shape.size(), shape.data(), owner, strides.data(), numpy_dtype(t.dtype())).cast();
  return nb::ndarray<nb::numpy, nb::ro>(data, shape.size(), shape.data(), owner, strides.data(), numpy_dtype(t.dtype())).cast();
}

std::vector<float> to_f32(const InArray& a, const std::string& what, const Shape& shape) {
  Tensor t = view(a, what);
  if (t.device().type != DeviceType::CPU) throw FormatError(what + ": expected a host (CPU) array, found one on " + device_str(a.device_type(), a.device_id()));
  const DType d = t.dtype();
  if (!(d == DType::F32 || d == DType::F64 || d == DType::F16 || d == DType::BF16))
    throw FormatError(what + ": expected a floating-point array (float32, float64, float16, bfloat16), found " + dtype_str(a.dtype()));
  if (t.shape() != shape) throw FormatError(what + ": expected shape " + shape_str(shape) + ", found " + shape_str(t.shape()));
  return to_f32_vector(t.is_contiguous() ? t : t.clone());
}

}  // namespace svdquant::python
