#include "errors.hpp"

#include "svdquant/error.hpp"

namespace nb = nanobind;

namespace svdquant::python {
namespace {

PyObject* g_error = nullptr;
PyObject* g_format = nullptr;
PyObject* g_config = nullptr;
PyObject* g_unsupported = nullptr;

PyObject* new_class(nb::module_& m, const char* name, const char* doc, nb::handle bases) {
  const std::string qual = std::string("svdquant.") + name;
  PyObject* cls = PyErr_NewExceptionWithDoc(qual.c_str(), doc, bases.ptr(), nullptr);
  if (!cls) throw nb::python_error();
  m.attr(name) = nb::handle(cls);
  return cls;  // one reference kept for the lifetime of the process
}

}  // namespace

void register_errors(nb::module_& m) {
  g_error = new_class(m, "Error", "Anything svdquant's C++ library raises on bad input or an unsupported request.",
                      nb::handle(PyExc_RuntimeError));
  auto pair = [](PyObject* a, PyObject* b) { return nb::make_tuple(nb::handle(a), nb::handle(b)); };
  g_format = new_class(m, "FormatError", "A file, tensor or array does not have the expected format, dtype or shape.",
                       pair(g_error, PyExc_ValueError));
  g_config = new_class(m, "ConfigError", "A configuration (config.json, quantization_config, an option) is invalid.",
                       pair(g_error, PyExc_ValueError));
  g_unsupported = new_class(m, "UnsupportedError", "A valid request that no available backend or device can carry out.",
                            pair(g_error, PyExc_NotImplementedError));
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const FormatError& e) {
      PyErr_SetString(g_format, e.what());
    } catch (const ConfigError& e) {
      PyErr_SetString(g_config, e.what());
    } catch (const UnsupportedError& e) {
      PyErr_SetString(g_unsupported, e.what());
    } catch (const Error& e) {
      PyErr_SetString(g_error, e.what());
    }
  });
}

}  // namespace svdquant::python
