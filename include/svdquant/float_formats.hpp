// Bit-exact conversions between float32/float64 and the narrow formats of docs/NUMERICS.md §1:
// bfloat16, float16, float8_e4m3fn and e2m1 (fp4). Every narrowing rounds to nearest, ties to even.
#pragma once
#include <bit>
#include <cstdint>

namespace svdquant {

// --- widening (exact) ---
inline float bf16_to_f32(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }
float fp16_to_f32(uint16_t h);
float e4m3_to_f32(uint8_t v);   // float8_e4m3fn: bias 7, no infinities, 0x7F/0xFF are NaN, max 448
float e2m1_to_f32(uint8_t code);  // low 4 bits: sign<<3 | idx, idx into {0, .5, 1, 1.5, 2, 3, 4, 6}

// --- narrowing, round to nearest even ---
// `tail` is the exact remainder of a double-double value v + tail (|tail| <= ulp(v)/2). It only
// breaks ties, which makes the rounding of v + tail a single correct rounding (used for T_fma).
uint16_t f64_to_bf16(double v, double tail = 0.0);
uint16_t f64_to_fp16(double v, double tail = 0.0);
// bf16: IEEE behaviour (overflow -> inf, NaN stays NaN, quieted).
uint16_t f32_to_bf16(float f);
inline uint16_t f32_to_fp16(float f) { return f64_to_fp16(f); }
// e4m3fn: values that round above 448 become NaN unless `saturate`, which clamps to +-448.
uint8_t f32_to_e4m3(float f, bool saturate = false);
// e2m1: saturates at +-6; results of magnitude 0 are +0 (code 0, never 8); NaN maps to code 0 and
// callers must handle NaN before (NUMERICS.md §6).
uint8_t f32_to_e2m1(float f);

// The layer dtype T of NUMERICS.md: bf16 or fp16, as a runtime tag.
enum class HalfKind : uint8_t { BF16, FP16 };
inline float half_to_f32(HalfKind k, uint16_t b) { return k == HalfKind::BF16 ? bf16_to_f32(b) : fp16_to_f32(b); }
inline uint16_t f32_to_half(HalfKind k, float f) { return k == HalfKind::BF16 ? f32_to_bf16(f) : f32_to_fp16(f); }
inline uint16_t f64_to_half(HalfKind k, double v, double tail = 0.0) {
  return k == HalfKind::BF16 ? f64_to_bf16(v, tail) : f64_to_fp16(v, tail);
}
// T(v): round a float to T and widen it back.
inline float round_half(HalfKind k, float f) { return half_to_f32(k, f32_to_half(k, f)); }

}  // namespace svdquant
