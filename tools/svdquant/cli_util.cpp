#include "cli_util.hpp"

#include <cmath>
#include <cstdio>

#include "svdquant/error.hpp"

namespace svdquant::cli {

std::string human_bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.2f %s" : "%.0f %s", v, units[u]);
  return buf;
}

double rel_l2(const Tensor& a, const Tensor& b) {
  if (a.numel() != b.numel()) throw Error("rel_l2: tensors differ in size");
  double num = 0, den = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    double x = element_as_double(a, i), y = element_as_double(b, i);
    num += (x - y) * (x - y);
    den += y * y;
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace svdquant::cli
