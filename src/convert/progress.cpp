#include "progress.hpp"

#include <unistd.h>

#include <cstdio>

namespace svdquant::convert {

Progress::Progress(std::string label, size_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled && total > 0 && isatty(STDERR_FILENO) == 1) {
  if (enabled_) draw("");
}

Progress::~Progress() {
  if (enabled_) std::fputc('\n', stderr);
}

void Progress::step(const std::string& item) {
  std::lock_guard<std::mutex> lock(mu_);
  ++done_;
  if (enabled_) draw(item);
}

void Progress::draw(const std::string& item) {
  constexpr size_t kWidth = 30;
  const size_t filled = total_ ? done_ * kWidth / total_ : kWidth;
  std::string bar(filled, '#');
  bar.resize(kWidth, '.');
  std::string shown = item.size() > 40 ? "..." + item.substr(item.size() - 37) : item;
  std::fprintf(stderr, "\r%s [%s] %zu/%zu %-40s", label_.c_str(), bar.c_str(), done_, total_, shown.c_str());
  std::fflush(stderr);
}

}  // namespace svdquant::convert
