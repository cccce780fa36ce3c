// Write-to-temporary-then-rename, so a failure never leaves a partial file or folder behind.
#pragma once
#include <filesystem>
#include <functional>

namespace svdquant::detail {

// Calls write(tmp) with a temporary path next to `dest`, then renames tmp over dest. If write
// throws, the temporary is removed and the exception propagates; dest is untouched.
void write_atomically(const std::filesystem::path& dest,
                      const std::function<void(const std::filesystem::path& tmp)>& write);

}  // namespace svdquant::detail
