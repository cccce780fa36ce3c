// A one-line progress bar on stderr for long conversions; drawn only when stderr is a terminal.
#pragma once
#include <cstddef>
#include <mutex>
#include <string>

namespace svdquant::convert {

class Progress {
 public:
  Progress(std::string label, size_t total, bool enabled);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  void step(const std::string& item);  // one unit done (thread-safe)

 private:
  void draw(const std::string& item);
  std::string label_;
  size_t total_, done_ = 0;
  bool enabled_;
  std::mutex mu_;
};

}  // namespace svdquant::convert
