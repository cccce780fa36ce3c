// Errors raised by svdquant. Every message names the thing that is wrong (file, tensor, key, shape).
#pragma once
#include <stdexcept>
#include <string>

namespace svdquant {

// Base class: anything svdquant throws on bad input or an unsupported request.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A file or tensor does not follow its format (safetensors, FORMAT.md, nunchaku layout).
class FormatError : public Error {
 public:
  using Error::Error;
};

// A configuration (config.json, quantization_config, command-line option) is invalid.
class ConfigError : public Error {
 public:
  using Error::Error;
};

// A valid request that no available backend or device can carry out.
class UnsupportedError : public Error {
 public:
  using Error::Error;
};

}  // namespace svdquant
