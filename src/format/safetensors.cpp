// safetensors I/O. The reader validates everything the header claims before any tensor is used:
// header length bounded and inside the file, JSON well formed, known dtypes, non-negative shapes,
// offsets inside the data region, byte length == numel * dtype size, no overlaps and no holes.
#include "svdquant/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "atomic_file.hpp"
#include "svdquant/error.hpp"

namespace svdquant {

using nlohmann::json;

namespace {

[[noreturn]] void fail(const std::string& context, const std::string& msg) {
  throw FormatError(context + ": " + msg);
}

uint64_t checked_numel_bytes(const Shape& shape, DType dtype, const std::string& ctx) {
  uint64_t n = dtype_size(dtype);
  for (int64_t d : shape)
    if (__builtin_mul_overflow(n, uint64_t(d), &n)) fail(ctx, "shape " + shape_str(shape) + " is too large");
  return n;
}

}  // namespace

void parse_safetensors_header(const std::string& text, uint64_t data_bytes, std::vector<TensorInfo>& tensors,
                              std::map<std::string, std::string>& metadata, const std::string& ctx) {
  json h;
  try {
    h = json::parse(text);
  } catch (const json::parse_error& e) {
    fail(ctx, std::string("header is not valid JSON (") + e.what() + ")");
  }
  if (!h.is_object()) fail(ctx, "header is not a JSON object");
  tensors.clear();
  metadata.clear();
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail(ctx, "__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) fail(ctx, "__metadata__." + m.key() + " is not a string");
        metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string tctx = ctx + ": tensor '" + name + "'";
    if (!v.is_object()) throw FormatError(tctx + ": entry is not an object");
    for (const char* key : {"dtype", "shape", "data_offsets"})
      if (!v.contains(key)) throw FormatError(tctx + ": missing '" + key + "'");
    if (!v["dtype"].is_string()) throw FormatError(tctx + ": dtype is not a string");
    auto dt = parse_dtype(v["dtype"].get<std::string>());
    if (!dt) throw FormatError(tctx + ": unsupported dtype '" + v["dtype"].get<std::string>() + "'");
    TensorInfo ti;
    ti.name = name;
    ti.dtype = *dt;
    if (!v["shape"].is_array()) throw FormatError(tctx + ": shape is not an array");
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) throw FormatError(tctx + ": shape " + v["shape"].dump() + " has a non-integer or negative entry");
      uint64_t dv = d.get<uint64_t>();
      if (dv > uint64_t(INT64_MAX)) throw FormatError(tctx + ": dimension too large");
      ti.shape.push_back(int64_t(dv));
    }
    const json& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw FormatError(tctx + ": data_offsets must be two non-negative integers");
    ti.begin = off[0].get<uint64_t>();
    ti.end = off[1].get<uint64_t>();
    if (ti.begin > ti.end) throw FormatError(tctx + ": data_offsets begin > end");
    if (ti.end > data_bytes)
      throw FormatError(tctx + ": data_offsets [" + std::to_string(ti.begin) + ", " + std::to_string(ti.end) +
                        ") lie outside the data region of " + std::to_string(data_bytes) + " bytes (truncated file?)");
    uint64_t want = checked_numel_bytes(ti.shape, ti.dtype, tctx);
    if (want != ti.end - ti.begin)
      throw FormatError(tctx + ": " + std::string(dtype_name(ti.dtype)) + " " + shape_str(ti.shape) + " needs " +
                        std::to_string(want) + " bytes but data_offsets give " + std::to_string(ti.end - ti.begin));
    tensors.push_back(std::move(ti));
  }
  std::sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t pos = 0;
  for (const auto& t : tensors) {
    if (t.begin < pos) fail(ctx, "tensor '" + t.name + "' overlaps the tensor before it");
    if (t.begin > pos) fail(ctx, "hole in the data region before tensor '" + t.name + "'");
    pos = t.end;
  }
  if (pos != data_bytes)
    fail(ctx, "data region has " + std::to_string(data_bytes) + " bytes but the tensors cover " + std::to_string(pos));
}

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path) {
  const std::string ctx = path.string();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(ctx, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    fail(ctx, "cannot stat");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(ctx, "not a regular file");
  }
  SafetensorsFile f;
  f.path_ = path;
  f.file_size_ = uint64_t(st.st_size);
  if (f.file_size_ < 8) {
    ::close(fd);
    fail(ctx, "file is " + std::to_string(f.file_size_) + " bytes, too short for a safetensors header");
  }
  void* p = ::mmap(nullptr, f.file_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) fail(ctx, std::string("mmap failed: ") + std::strerror(errno));
  const uint64_t size = f.file_size_;
  f.mapping_ = std::shared_ptr<void>(p, [size](void* q) { ::munmap(q, size); });
  const auto* bytes = static_cast<const uint8_t*>(p);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  if (n > kMaxHeaderBytes) fail(ctx, "header length " + std::to_string(n) + " exceeds the limit of " + std::to_string(kMaxHeaderBytes) + " bytes");
  if (n > size - 8) fail(ctx, "header length " + std::to_string(n) + " runs past the end of the file (" + std::to_string(size) + " bytes; truncated?)");
  std::string text(reinterpret_cast<const char*>(bytes + 8), size_t(n));
  parse_safetensors_header(text, size - 8 - n, f.tensors_, f.metadata_, ctx);
  for (size_t i = 0; i < f.tensors_.size(); ++i) f.index_[f.tensors_[i].name] = i;
  f.data_ = bytes + 8 + n;
  return f;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& t : tensors_) out.push_back(t.name);
  return out;
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw FormatError(path_.string() + ": no tensor named '" + name + "'");
  return tensors_[it->second];
}

Tensor SafetensorsFile::tensor(const std::string& name) const {
  const TensorInfo& ti = info(name);
  return Tensor::wrap(const_cast<uint8_t*>(data_ + ti.begin), ti.dtype, ti.shape, Device{}, mapping_);
}

void write_safetensors(const std::filesystem::path& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t off = 0;
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__" || !seen.insert(name).second)
      throw FormatError(path.string() + ": duplicate or reserved tensor name '" + name + "'");
    if (t.device().type != DeviceType::CPU) throw FormatError(path.string() + ": tensor '" + name + "' is not on the host");
    uint64_t nb = t.nbytes();
    h[name] = {{"dtype", std::string(dtype_name(t.dtype()))}, {"shape", t.shape()}, {"data_offsets", {off, off + nb}}};
    off += nb;
  }
  std::string text = h.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // align the data region to 8 bytes
  detail::write_atomically(path, [&](const std::filesystem::path& tmp) {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error("cannot create " + tmp.string());
    uint64_t n = text.size();
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = uint8_t(n >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(text.data(), std::streamsize(text.size()));
    for (const auto& [name, t] : tensors) {
      if (t.is_contiguous()) {
        out.write(static_cast<const char*>(t.data()), std::streamsize(t.nbytes()));
      } else {
        Tensor c = t.clone();
        out.write(static_cast<const char*>(c.data()), std::streamsize(c.nbytes()));
      }
    }
    out.flush();
    if (!out) throw Error("write failed: " + tmp.string() + " (disk full?)");
  });
}

}  // namespace svdquant
