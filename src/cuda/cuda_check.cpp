#include "cuda_check.hpp"

namespace svdquant::cuda {

void throw_cuda_error(cudaError_t e, const char* what) {
  // Clear the sticky-free error state of the runtime so later calls are not blamed for this one.
  (void)cudaGetLastError();
  throw Error(std::string("cuda-sm90: ") + what + ": " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}

int sm_count(int device) {
  if (device < 0) check(cudaGetDevice(&device), "cudaGetDevice");
  int n = 0;
  check(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute(SMs)");
  return n;
}

}  // namespace svdquant::cuda
