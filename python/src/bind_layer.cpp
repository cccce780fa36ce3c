// svdquant.Layer: one quantized layer prepared on a backend (svdquant::SVDQuantLinear), and its
// forward on DLPack arrays. Host arrays run on any backend (device backends stage through device
// memory); CUDA arrays run on a CUDA backend, on the stream given as an integer (cudaStream_t),
// writing into a caller-allocated output: the extension never allocates framework memory and
// links no framework.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstring>

#include "arrays.hpp"
#include "bindings.hpp"
#include "svdquant/error.hpp"
#include "svdquant/linear.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace svdquant::python {
namespace {

DType layer_dtype(const LayerDesc& d) { return d.dtype == HalfKind::BF16 ? DType::BF16 : DType::F16; }

LinearOptions make_options(const std::string& backend, const std::string& accumulate, const std::string& activations) {
  LinearOptions o;
  o.backend = backend;
  o.forward.accumulate = parse_accumulate(accumulate, "accumulate");
  o.forward.activations = parse_activations(activations, "activations");
  return o;
}

std::string device_of(const Tensor& t) {
  return t.device().type == DeviceType::CPU ? "cpu" : "cuda:" + std::to_string(t.device().index);
}

// Checks the output array against the expected dtype, shape and device; returns its Tensor view.
Tensor check_out(const nb::object& out, const std::string& T_name, DType T, const Shape& shape, const Tensor& x,
                 std::optional<DType> as) {
  OutArray arr;
  if (!nb::try_cast(out, arr))
    throw FormatError("out: expected a writable array (numpy, torch or any DLPack producer), found " +
                      std::string(nb::type_name(out.type()).c_str()));
  Tensor y = view_out(arr, "out", as);
  if (y.dtype() != T) throw FormatError("out: dtype " + dtype_str(arr.dtype()) + ", but the layer dtype is " + T_name);
  if (y.shape() != shape) throw FormatError("out: expected shape " + shape_str(shape) + ", found " + shape_str(y.shape()));
  if (!y.is_contiguous()) throw FormatError("out: must be contiguous");
  if (!(y.device() == x.device()))
    throw FormatError("out: on " + device_of(y) + ", but the input x is on " + device_of(x));
  return y;
}

nb::object forward(const SVDQuantLinear& L, const InArray& xa, const nb::object& out, uintptr_t stream,
                   const std::optional<std::string>& dtype) {
  const LayerDesc& d = L.desc();
  const DType T = layer_dtype(d);
  const std::string T_name = half_dtype_str(T);
  std::optional<DType> as;
  if (dtype) {
    as = parse_half_dtype(*dtype, "dtype");
    if (*as != T) throw FormatError("dtype='" + *dtype + "', but the layer dtype is " + T_name);
  }
  Tensor x = view(xa, "input x", as);
  if (x.dtype() != T) {
    std::string hint;
    if (T == DType::BF16 && x.dtype() == DType::U16) hint = " (uint16 bits of bfloat16 need dtype='bfloat16')";
    throw FormatError("input x: dtype " + dtype_str(xa.dtype()) + ", but the layer dtype is " + T_name + hint);
  }
  if (x.dim() < 1 || x.size(-1) != d.K)
    throw FormatError("input x: expected shape [..., " + std::to_string(d.K) + "], found " + shape_str(x.shape()));
  Shape out_shape = x.shape();
  out_shape.back() = d.N;
  const int64_t M = x.numel() / d.K;
  const bool cpu_backend = L.backend().device_type() == DeviceType::CPU;

  if (x.device().type == DeviceType::CUDA) {
    if (cpu_backend)
      throw UnsupportedError("input x is on " + device_of(x) + ", but this layer runs on the '" + std::string(L.backend().name()) +
                             "' backend: prepare the layer on a CUDA backend (backend='cuda') or give a host array");
    if (out.is_none())
      throw FormatError("input x is on " + device_of(x) + ": pass out=, a contiguous " + T_name + " array " + shape_str(out_shape) +
                        " on the same device (the extension allocates no device arrays)");
    if (!x.is_contiguous()) throw FormatError("input x: a CUDA input must be contiguous");
    Tensor y = check_out(out, T_name, T, out_shape, x, as);
    Tensor x2 = x.reshape({M, d.K}), y2 = y.reshape({M, d.N});
    {
      nb::gil_scoped_release release;
      L.forward(x2, y2, reinterpret_cast<void*>(stream));
    }
    return out;
  }

  // Host input.
  Tensor x2 = (x.is_contiguous() ? x : x.clone()).reshape({M, d.K});
  if (!out.is_none()) {
    Tensor y = check_out(out, T_name, T, out_shape, x, as);
    Tensor y2 = y.reshape({M, d.N});
    nb::gil_scoped_release release;
    if (cpu_backend) {
      L.forward(x2, y2, nullptr);
    } else {
      Tensor r = L.forward(x2);
      if (r.nbytes()) std::memcpy(y2.data(), r.data(), r.nbytes());
    }
    return out;
  }
  Tensor y;
  {
    nb::gil_scoped_release release;
    if (cpu_backend) {
      y = Tensor::zeros(T, {M, d.N});
      L.forward(x2, y, nullptr);
    } else {
      y = L.forward(x2);
    }
  }
  return to_numpy(y.reshape(out_shape), /*writable=*/true);
}

}  // namespace

void bind_layer(nb::module_& m) {
  nb::class_<SVDQuantLinear>(m, "Layer", nb::is_weak_referenceable(),
                             "A quantized linear layer prepared on a backend (backend: 'auto', 'cpu', 'cuda' or a "
                             "backend name; accumulate: 'fp32' | 'half'; activations: 'auto' | 'checkpoint' | 'fp8', "
                             "auto being the backend's default: fp8 for int4 fp32 layers on cuda-sm90, the "
                             "checkpoint's 4-bit elsewhere; docs/NUMERICS.md). The properties give the options "
                             "the backend runs. CUDA backends prepare on the current CUDA device.")
      .def(
          "__init__",
          [](SVDQuantLinear* self, const LayerWeights& w, const std::string& backend, const std::string& accumulate,
             const std::string& activations) {
            const LinearOptions o = make_options(backend, accumulate, activations);
            nb::gil_scoped_release release;
            new (self) SVDQuantLinear(w, o);
          },
          "weights"_a, "backend"_a = "auto", "accumulate"_a = "fp32", "activations"_a = "auto")
      .def(
          "__init__",
          [](SVDQuantLinear* self, const Checkpoint& ck, const std::string& prefix, const std::string& backend,
             const std::string& accumulate, const std::string& activations) {
            const LinearOptions o = make_options(backend, accumulate, activations);
            nb::gil_scoped_release release;
            new (self) SVDQuantLinear(SVDQuantLinear::from_checkpoint(ck, prefix, o));
          },
          "checkpoint"_a, "prefix"_a, "backend"_a = "auto", "accumulate"_a = "fp32", "activations"_a = "auto")
      .def_prop_ro("in_features", [](const SVDQuantLinear& L) { return L.desc().K; })
      .def_prop_ro("out_features", [](const SVDQuantLinear& L) { return L.desc().N; })
      .def_prop_ro("rank", [](const SVDQuantLinear& L) { return L.desc().R; })
      .def_prop_ro("precision", [](const SVDQuantLinear& L) { return std::string(to_string(L.desc().precision)); })
      .def_prop_ro("dtype", [](const SVDQuantLinear& L) { return half_dtype_str(layer_dtype(L.desc())); })
      .def_prop_ro("act_unsigned", [](const SVDQuantLinear& L) { return L.desc().act_unsigned; })
      .def_prop_ro("has_bias", [](const SVDQuantLinear& L) { return L.desc().has_bias; })
      .def_prop_ro("backend", [](const SVDQuantLinear& L) { return std::string(L.backend().name()); })
      .def_prop_ro("device_type", [](const SVDQuantLinear& L) {
        return std::string(L.backend().device_type() == DeviceType::CPU ? "cpu" : "cuda");
      })
      .def_prop_ro("accumulate", [](const SVDQuantLinear& L) { return std::string(to_string(L.options().accumulate)); })
      .def_prop_ro("activations", [](const SVDQuantLinear& L) { return std::string(to_string(L.options().activations)); })
      .def("forward", &forward, "x"_a, "out"_a = nb::none(), "stream"_a = 0, "dtype"_a = nb::none(),
           "y = layer(x) for x [..., K] of the layer dtype: a host array (numpy, torch CPU, ...) or, on a CUDA "
           "backend, a contiguous CUDA array with out= given. Returns a new numpy array [..., N], or `out` "
           "when given. `stream` is a cudaStream_t as an integer (0: the default stream). numpy has no "
           "bfloat16: pass its uint16 bits with dtype='bfloat16' (the result is uint16 bits too).")
      .def("__call__", &forward, "x"_a, "out"_a = nb::none(), "stream"_a = 0, "dtype"_a = nb::none())
      .def("__repr__", [](const SVDQuantLinear& L) {
        const LayerDesc& d = L.desc();
        return "<svdquant.Layer " + std::string(to_string(d.precision)) + " " + half_dtype_str(layer_dtype(d)) +
               " in_features=" + std::to_string(d.K) + " out_features=" + std::to_string(d.N) + " rank=" + std::to_string(d.R) +
               " backend=" + std::string(L.backend().name()) + ">";
      });

  m.def(
      "backends",
      [] {
        std::vector<std::string> names;
        for (const Backend* b : BackendRegistry::instance().backends()) names.emplace_back(b->name());
        return names;
      },
      "Names of the backends built into this extension ('cpu', and 'cuda-sm90' when built with CUDA).");
}

}  // namespace svdquant::python
