// A deterministic parallel loop for the quantizer: [0, n) is cut into contiguous chunks, one per
// worker; every index is computed by exactly one thread with no shared reductions, so results do
// not depend on the number of threads.
#pragma once
#include <cstdint>
#include <functional>

namespace svdquant::quant {

// Number of worker threads used by the quantizer's own loops (hardware concurrency, >= 1).
int worker_threads();

// Calls fn(begin, end) on disjoint chunks covering [0, n). Exceptions from workers are rethrown.
void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace svdquant::quant
