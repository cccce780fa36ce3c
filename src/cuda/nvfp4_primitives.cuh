// Device helper of the nvfp4 kernels: the e2m1 rounding of NUMERICS.md §1 (integer compares
// only), used by the activation kernel for its optional test output of the codes.
#pragma once
#include <cstdint>

namespace svdquant::cuda::nv {

// e2m1_rne of NUMERICS.md §1 (v is never NaN here): ties to the even idx, saturating at 6; a
// result of magnitude 0 is code 0.
__device__ __forceinline__ uint32_t e2m1_rne(float v) {
  const float a = fabsf(v);
  uint32_t idx;
  if (a <= 0.25f) idx = 0;
  else if (a < 0.75f) idx = 1;
  else if (a <= 1.25f) idx = 2;
  else if (a < 1.75f) idx = 3;
  else if (a <= 2.5f) idx = 4;
  else if (a < 3.5f) idx = 5;
  else if (a <= 5.0f) idx = 6;
  else idx = 7;
  return idx == 0 ? 0u : ((__float_as_uint(v) >> 31) << 3) | idx;
}

}  // namespace svdquant::cuda::nv
