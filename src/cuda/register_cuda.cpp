// Registers the CUDA backends with the process-wide registry (include/svdquant/backend.hpp).
#include "svdquant/backend.hpp"

namespace svdquant::detail {

void register_cuda_backends(BackendRegistry& /*r*/) {
  // The "cuda-sm90" backend is registered here once it exists.
}

}  // namespace svdquant::detail
