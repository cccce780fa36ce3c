// SVDQUANT_HD: __host__ __device__ under nvcc, nothing for the host compiler. For the headers
// that the kernels and their host-side code share (sm90_layout.hpp, smooth_div.hpp, row_div.hpp).
#pragma once

#if defined(__CUDACC__)
#define SVDQUANT_HD __host__ __device__
#else
#define SVDQUANT_HD
#endif
