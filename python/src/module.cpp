// svdquant._C: the nanobind extension over the svdquant C++ library. It exchanges arrays through
// DLPack and takes CUDA streams as integers, so it links no framework: one build serves numpy and
// every torch version.
#include <nanobind/nanobind.h>

#include "bindings.hpp"
#include "errors.hpp"

namespace nb = nanobind;

NB_MODULE(_C, m) {
  m.doc() = "svdquant C++ library bindings (use the svdquant package)";
#ifdef SVDQUANT_HAVE_CUDA
  m.attr("built_with_cuda") = true;
#else
  m.attr("built_with_cuda") = false;
#endif
  svdquant::python::register_errors(m);
  svdquant::python::bind_checkpoint(m);
  svdquant::python::bind_layer(m);
  svdquant::python::bind_quantize(m);
  svdquant::python::bind_writer(m);
}
