// safetensors reader (mmap, zero-copy, every header field validated) and writer (temp file +
// rename: a failure never leaves a partial file at the destination).
// Format: 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets},
// "__metadata__": {str: str}}, then the data region.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "svdquant/tensor.hpp"

namespace svdquant {

struct TensorInfo {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte offsets inside the data region
};

class SafetensorsFile {
 public:
  // Largest header accepted (the reference implementation's limit).
  static constexpr uint64_t kMaxHeaderBytes = 100u << 20;

  // Maps the file and validates the header; throws FormatError naming the file and the problem.
  static SafetensorsFile open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Tensor names in file order (by data offset).
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;  // throws FormatError if absent
  // A zero-copy view into the mapping; the mapping stays alive while the tensor does.
  Tensor tensor(const std::string& name) const;
  uint64_t file_size() const { return file_size_; }

 private:
  std::filesystem::path path_;
  std::shared_ptr<void> mapping_;
  const uint8_t* data_ = nullptr;  // start of the data region
  uint64_t file_size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Parses and validates a header (exposed for tests and for the writer's self-check).
// `data_bytes` is the size of the data region that follows the header.
void parse_safetensors_header(const std::string& json_text, uint64_t data_bytes,
                              std::vector<TensorInfo>& tensors,
                              std::map<std::string, std::string>& metadata,
                              const std::string& context);

// Writes host tensors (contiguous) to `path` through a temporary file in the same directory that
// is renamed into place only when everything was written. Names must be unique.
void write_safetensors(const std::filesystem::path& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace svdquant
