// Device helpers shared by the two activation kernels (act_quant.cu: int4 / fp8 codes;
// nvfp4_act.cu: nvfp4): T pairs as floats, the x copies into the warps' shared-memory rings, and
// the bf16 / fp16 mma.sync of the low-rank down projection.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace svdquant::cuda {

// A T value (bf16 or fp16) and a pair of them packed in 32 bits (lower column in the low half).
template <bool BF16> struct HalfOps;
template <> struct HalfOps<true> {
  static __device__ float to_f32(uint32_t b) { return __uint_as_float(b << 16); }
  static __device__ uint16_t from_f32(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }
  // Two floats rounded to T, lo in the low half (one F2FP instruction).
  static __device__ uint32_t pack2(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
  static __device__ void unpack2(uint32_t w, float& lo, float& hi) {
    lo = __uint_as_float(w << 16);
    hi = __uint_as_float(w & 0xFFFF0000u);
  }
  static constexpr uint16_t kNaN = 0x7FC0;
  static constexpr uint32_t kInf = 0x7F80;   // |T| bits at or above this are not finite
};
template <> struct HalfOps<false> {
  static __device__ float to_f32(uint32_t b) { return __half2float(__ushort_as_half(uint16_t(b))); }
  static __device__ uint16_t from_f32(float f) { return __half_as_ushort(__float2half_rn(f)); }
  static __device__ uint32_t pack2(float lo, float hi) {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
  static __device__ void unpack2(uint32_t w, float& lo, float& hi) {
    const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&w));
    lo = f.x;
    hi = f.y;
  }
  static constexpr uint16_t kNaN = 0x7E00;
  static constexpr uint32_t kInf = 0x7C00;
};

__device__ __forceinline__ uint32_t word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// x goes to shared memory by cp.async.cg (L2 only: L1 holds the shared proj_down fragments and
// reciprocals; x is read once in 4-bit mode, twice from L2 in fp8). bytes = 0 zero-fills the 16
// bytes (padding rows), reading nothing.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, uint32_t bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// D (16 x 8, float32) += A (16 x 16, T, row) * B (16 x 8, T, col): products of two T values are
// exact in float32, the sums float32.
template <bool BF16>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (BF16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

}  // namespace svdquant::cuda
