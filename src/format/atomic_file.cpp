#include "atomic_file.hpp"

#include <atomic>
#include <string>
#include <system_error>
#include <unistd.h>

#include "svdquant/error.hpp"

namespace svdquant::detail {

void write_atomically(const std::filesystem::path& dest,
                      const std::function<void(const std::filesystem::path& tmp)>& write) {
  namespace fs = std::filesystem;
  static std::atomic<unsigned> counter{0};
  fs::path parent = dest.parent_path().empty() ? fs::path(".") : dest.parent_path();
  std::error_code ec;
  if (!fs::is_directory(parent, ec))
    throw Error("cannot write " + dest.string() + ": directory " + parent.string() + " does not exist");
  std::string name = ".";
  name += dest.filename().string();
  name += ".tmp-";
  name += std::to_string(::getpid());
  name += '-';
  name += std::to_string(counter++);
  const fs::path tmp = parent / name;
  try {
    write(tmp);
    if (fs::is_directory(dest, ec) && fs::is_directory(tmp, ec)) fs::remove_all(dest);
    fs::rename(tmp, dest);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace svdquant::detail
