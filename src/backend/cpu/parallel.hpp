// A minimal parallel-for: work items [0, n) handed out in order to `threads` std::threads. Each
// item is computed by exactly one thread, so results never depend on the thread count.
#pragma once
#include <cstdint>
#include <functional>

namespace svdquant::detail {

int default_threads();  // hardware concurrency, or SVDQUANT_THREADS if set
void parallel_for(int64_t n, int threads, const std::function<void(int64_t)>& body);

}  // namespace svdquant::detail
