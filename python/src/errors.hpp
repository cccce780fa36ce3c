// svdquant's C++ exceptions as Python exception classes (same messages, no rewording):
//   svdquant.Error            (RuntimeError)          svdquant::Error
//   svdquant.FormatError      (Error, ValueError)     svdquant::FormatError
//   svdquant.ConfigError      (Error, ValueError)     svdquant::ConfigError
//   svdquant.UnsupportedError (Error, NotImplementedError)  svdquant::UnsupportedError
#pragma once
#include <nanobind/nanobind.h>

namespace svdquant::python {

// Creates the classes as attributes of `m` and registers the translator.
void register_errors(nanobind::module_& m);

}  // namespace svdquant::python
