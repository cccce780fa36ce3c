// Runs independent per-layer jobs on a few threads (private to src/convert). Each job writes only
// its own result slot, so the output does not depend on the thread count or the scheduling. After
// a failure no new job starts; the exception of the lowest-numbered failed job is rethrown once all
// threads have stopped.
#pragma once
#include <cstddef>
#include <functional>

namespace svdquant::convert {

void for_each_layer(size_t n, const std::function<void(size_t)>& job);

}  // namespace svdquant::convert
