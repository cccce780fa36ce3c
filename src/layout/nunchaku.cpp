// Nunchaku fragment layouts (include/svdquant/layout_nunchaku.hpp, docs/FORMAT.md "Nunchaku
// interop"). Each layout is a pure permutation of elements plus padding, so pack and unpack are the
// same index map read in opposite directions; the maps are written once, as offset functions.
#include "svdquant/layout_nunchaku.hpp"

#include <cstring>

#include "svdquant/error.hpp"

namespace svdquant::nunchaku {

namespace {

std::string desc(const Tensor& t) { return std::string(dtype_name(t.dtype())) + " " + shape_str(t.shape()); }

[[noreturn]] void fail(const std::string& what, const std::string& msg) { throw FormatError(what + ": " + msg); }

void check_half(const Tensor& t, const std::string& what) {
  if (t.dtype() != DType::BF16 && t.dtype() != DType::F16) fail(what, "expected BF16 or F16, found " + desc(t));
}

void check_dims(const Tensor& t, int64_t dims, const std::string& what, const char* expected) {
  if (t.dim() != dims) fail(what, std::string("expected ") + expected + ", found " + desc(t));
}

Tensor contiguous(const Tensor& t) { return t.is_contiguous() ? t : t.clone(); }

// The value 1 in a 16-bit float dtype (the fill of padded scales and vectors).
uint16_t half_one(DType t) { return t == DType::BF16 ? uint16_t(0x3F80) : uint16_t(0x3C00); }
constexpr uint8_t kE4m3One = 0x38;

// qweight: the 32-bit word holding codes k .. k+7 (k % 8 == 0) of row n is
//   ((((bn * (Kp/64) + bk) * 8 + np) * 32 + (nl * 4 + kl)) * 4) + (ns * 2 + ks)
// with bn = n/128, np = (n%128)/16, ns = (n%16)/8, nl = n%8, bk = k/64, ks = (k%64)/32, kl = (k%32)/8.
// Calls fn(word, n, k) for every word of a [Np, Kp/2] qweight in file order (the loops below are
// that formula's digits, most significant first).
template <class Fn>
void for_each_qweight_word(int64_t Np, int64_t Kp, Fn&& fn) {
  int64_t word = 0;
  for (int64_t bn = 0; bn < Np / 128; ++bn)
    for (int64_t bk = 0; bk < Kp / 64; ++bk)
      for (int64_t np = 0; np < 8; ++np)
        for (int64_t nl = 0; nl < 8; ++nl)
          for (int64_t kl = 0; kl < 4; ++kl)
            for (int64_t ns = 0; ns < 2; ++ns)
              for (int64_t ks = 0; ks < 2; ++ks, ++word) fn(word, bn * 128 + np * 16 + ns * 8 + nl, bk * 64 + ks * 32 + kl * 8);
}

// int4 wscales and 1-D vectors: flat index of element (n, g) with G groups in the file.
inline int64_t scale_index(int64_t n, int64_t g, int64_t G) {
  const int64_t a = (n % 128) / 16, b = (n % 16) / 8, c = (n % 8) / 2, d = n % 2;
  return (n / 128 * G + g) * 128 + a * 16 + c * 4 + b * 2 + d;
}

// nvfp4 micro-scales: byte index of element (n, kg), Ks = 16 x rows in the file.
inline int64_t micro_scale_index(int64_t n, int64_t kg, int64_t Ks) {
  return (((((n / 128 * (Ks / 64) + kg / 4) * 8 + n % 8) * 4 + (n % 32) / 8) * 4 + (n % 128) / 32) * 4) + kg % 4;
}

// Low-rank tiles: element (c, rk) of a [C, R] tensor. `down`: rank plays the n role.
inline int64_t lowrank_index(int64_t c, int64_t rk, int64_t R, bool down) {
  int64_t lane, reg, e;
  if (down) {
    lane = (rk % 8) * 4 + (c % 8) / 2;
    reg = ((rk % 16) / 8) * 2 + (c % 16) / 8;
    e = c % 2;
  } else {
    lane = (c % 8) * 4 + (rk % 8) / 2;
    reg = ((c % 16) / 8) * 2 + (rk % 16) / 8;
    e = rk % 2;
  }
  return (((c / 16) * (R / 16) + rk / 16) * 32 + lane) * 8 + reg * 2 + e;
}

void check_qweight_sizes(int64_t N, int64_t K, int64_t Np, int64_t Kp, const std::string& what) {
  if (N < 1 || K < 16 || K % 16 != 0)
    fail(what, "true sizes N = " + std::to_string(N) + ", K = " + std::to_string(K) + " (K must be a positive multiple of 16)");
  if (Np % kPadN != 0 || Kp % kPadK != 0)
    fail(what, "padded sizes Np = " + std::to_string(Np) + ", Kp = " + std::to_string(Kp) + " are not multiples of 128");
  if (N > Np || K > Kp)
    fail(what, "true sizes [" + std::to_string(N) + ", " + std::to_string(K) + "] exceed the padded sizes [" + std::to_string(Np) +
                   ", " + std::to_string(Kp) + "]");
}

// Shared body of the int4-scale and vector layouts: canonical [G, N] <-> packed [Gp, Np].
Tensor pack_scales16(const Tensor& src, int64_t G, int64_t N, int64_t Gp, int64_t Np, Shape out_shape) {
  Tensor out = Tensor::zeros(src.dtype(), std::move(out_shape));
  auto* dst = out.data_as<uint16_t>();
  const uint16_t one = half_one(src.dtype());
  for (int64_t i = 0; i < Gp * Np; ++i) dst[i] = one;
  const auto* s = src.data_as<uint16_t>();
  for (int64_t g = 0; g < G; ++g)
    for (int64_t n = 0; n < N; ++n) dst[scale_index(n, g, Gp)] = s[g * N + n];
  return out;
}

Tensor unpack_scales16(const Tensor& packed, int64_t G, int64_t N, int64_t Gp, Shape out_shape) {
  Tensor out = Tensor::zeros(packed.dtype(), std::move(out_shape));
  auto* dst = out.data_as<uint16_t>();
  const auto* s = packed.data_as<uint16_t>();
  for (int64_t g = 0; g < G; ++g)
    for (int64_t n = 0; n < N; ++n) dst[g * N + n] = s[scale_index(n, g, Gp)];
  return out;
}

}  // namespace

int64_t padded_scale_rows(Precision p, int64_t K) {
  return p == Precision::INT4 ? padded_k(K) / 64 : round_up(K, 64) / 16;
}

// ------------------------------------------------------------------------------------ qweight

Tensor pack_qweight(const Tensor& canonical, int64_t Np, int64_t Kp, const std::string& what) {
  check_dims(canonical, 2, what, "int8 [N, K/2]");
  if (canonical.dtype() != DType::I8 && canonical.dtype() != DType::U8) fail(what, "expected int8 [N, K/2], found " + desc(canonical));
  const int64_t N = canonical.size(0), K = canonical.size(1) * 2;
  check_qweight_sizes(N, K, Np, Kp, what);
  const Tensor c = contiguous(canonical);
  Tensor out = Tensor::zeros(DType::I8, {Np, Kp / 2});
  const auto* src = c.data_as<uint8_t>();
  auto* dst = out.data_as<uint8_t>();
  // Eight consecutive codes of a row are four canonical bytes and, read little-endian, exactly
  // one nunchaku word (code r in bits 4r..4r+3): the permutation moves whole 32-bit words. Words
  // are visited in file order, so the writes are sequential and the reads stay in one 128 x 64 tile.
  for_each_qweight_word(Np, Kp, [&](int64_t word, int64_t n, int64_t k) {
    if (n < N && k < K) std::memcpy(dst + 4 * word, src + n * (K / 2) + k / 2, 4);
  });
  return out;
}

Tensor unpack_qweight(const Tensor& packed, int64_t N, int64_t K, const std::string& what) {
  check_dims(packed, 2, what, "int8 [Np, Kp/2]");
  if (packed.dtype() != DType::I8 && packed.dtype() != DType::U8) fail(what, "expected int8 [Np, Kp/2], found " + desc(packed));
  const int64_t Np = packed.size(0), Kp = packed.size(1) * 2;
  check_qweight_sizes(N, K, Np, Kp, what);
  const Tensor p = contiguous(packed);
  Tensor out = Tensor::zeros(DType::I8, {N, K / 2});
  const auto* src = p.data_as<uint8_t>();
  auto* dst = out.data_as<uint8_t>();
  for_each_qweight_word(Np, Kp, [&](int64_t word, int64_t n, int64_t k) {
    if (n < N && k < K) std::memcpy(dst + n * (K / 2) + k / 2, src + 4 * word, 4);
  });
  return out;
}

// ------------------------------------------------------------------------------ int4 wscales

Tensor pack_wscales_int4(const Tensor& canonical, int64_t Np, int64_t Gp, const std::string& what) {
  check_dims(canonical, 2, what, "[K/64, N] BF16/F16");
  check_half(canonical, what);
  const int64_t G = canonical.size(0), N = canonical.size(1);
  if (Np % kPadN != 0 || N > Np || G > Gp || G < 1)
    fail(what, "cannot pack " + desc(canonical) + " into [" + std::to_string(Gp) + ", " + std::to_string(Np) + "]");
  return pack_scales16(contiguous(canonical), G, N, Gp, Np, {Gp, Np});
}

Tensor unpack_wscales_int4(const Tensor& packed, int64_t N, int64_t G, const std::string& what) {
  check_dims(packed, 2, what, "[Gp, Np] BF16/F16");
  check_half(packed, what);
  const int64_t Gp = packed.size(0), Np = packed.size(1);
  if (Np % kPadN != 0) fail(what, "padded N = " + std::to_string(Np) + " is not a multiple of 128 (" + desc(packed) + ")");
  if (N < 1 || G < 1 || N > Np || G > Gp)
    fail(what, "true sizes [G = " + std::to_string(G) + ", N = " + std::to_string(N) + "] do not fit " + desc(packed));
  return unpack_scales16(contiguous(packed), G, N, Gp, {G, N});
}

// ---------------------------------------------------------------------------- nvfp4 wscales

Tensor pack_wscales_nvfp4(const Tensor& canonical, int64_t Np, int64_t Ks, const std::string& what) {
  check_dims(canonical, 2, what, "[K/16, N] F8_E4M3");
  if (canonical.dtype() != DType::F8_E4M3 && canonical.dtype() != DType::U8) fail(what, "expected F8_E4M3, found " + desc(canonical));
  const int64_t G = canonical.size(0), N = canonical.size(1);
  if (Np % kPadN != 0 || Ks % 64 != 0 || N > Np || G * 16 > Ks || G < 1)
    fail(what, "cannot pack " + desc(canonical) + " into [" + std::to_string(Ks / 16) + ", " + std::to_string(Np) + "]");
  const Tensor c = contiguous(canonical);
  Tensor out = Tensor::zeros(DType::F8_E4M3, {Ks / 16, Np});
  auto* dst = out.data_as<uint8_t>();
  std::memset(dst, kE4m3One, size_t(Ks / 16 * Np));
  const auto* src = c.data_as<uint8_t>();
  for (int64_t g = 0; g < G; ++g)
    for (int64_t n = 0; n < N; ++n) dst[micro_scale_index(n, g, Ks)] = src[g * N + n];
  return out;
}

Tensor unpack_wscales_nvfp4(const Tensor& packed, int64_t N, int64_t G, const std::string& what) {
  check_dims(packed, 2, what, "[Ks/16, Np] F8_E4M3");
  if (packed.dtype() != DType::F8_E4M3 && packed.dtype() != DType::U8) fail(what, "expected F8_E4M3, found " + desc(packed));
  const int64_t Ks = packed.size(0) * 16, Np = packed.size(1);
  if (Np % kPadN != 0 || Ks % 64 != 0)
    fail(what, desc(packed) + " is not a padded nunchaku micro-scale tensor (rows % 4 == 0, columns % 128 == 0)");
  if (N < 1 || G < 1 || N > Np || G * 16 > Ks)
    fail(what, "true sizes [G = " + std::to_string(G) + ", N = " + std::to_string(N) + "] do not fit " + desc(packed));
  const Tensor p = contiguous(packed);
  Tensor out = Tensor::zeros(DType::F8_E4M3, {G, N});
  auto* dst = out.data_as<uint8_t>();
  const auto* src = p.data_as<uint8_t>();
  for (int64_t g = 0; g < G; ++g)
    for (int64_t n = 0; n < N; ++n) dst[g * N + n] = src[micro_scale_index(n, g, Ks)];
  return out;
}

// ----------------------------------------------------------------------------- 1-D vectors

Tensor pack_vector(const Tensor& canonical, int64_t Np, const std::string& what) {
  check_dims(canonical, 1, what, "[N] BF16/F16");
  check_half(canonical, what);
  const int64_t N = canonical.size(0);
  if (Np % kPadN != 0 || N > Np || N < 1) fail(what, "cannot pack " + desc(canonical) + " into [" + std::to_string(Np) + "]");
  return pack_scales16(contiguous(canonical), 1, N, 1, Np, {Np});
}

Tensor unpack_vector(const Tensor& packed, int64_t N, const std::string& what) {
  check_dims(packed, 1, what, "[Np] BF16/F16");
  check_half(packed, what);
  const int64_t Np = packed.size(0);
  if (Np % kPadN != 0) fail(what, "padded length " + std::to_string(Np) + " is not a multiple of 128");
  if (N < 1 || N > Np) fail(what, "true length " + std::to_string(N) + " does not fit " + desc(packed));
  return unpack_scales16(contiguous(packed), 1, N, 1, {N});
}

// -------------------------------------------------------------------------- low-rank branch

namespace {

Tensor pack_lowrank(const Tensor& canonical, int64_t Cp, bool down, const std::string& what) {
  check_dims(canonical, 2, what, down ? "[K, R] BF16/F16" : "[N, R] BF16/F16");
  check_half(canonical, what);
  const int64_t C = canonical.size(0), R = canonical.size(1);
  if (R % 16 != 0) fail(what, "rank " + std::to_string(R) + " is not a multiple of 16 (" + desc(canonical) + ")");
  if (Cp % 16 != 0 || C > Cp) fail(what, "cannot pack " + desc(canonical) + " into [" + std::to_string(Cp) + ", " + std::to_string(R) + "]");
  const Tensor c = contiguous(canonical);
  Tensor out = Tensor::zeros(canonical.dtype(), {Cp, R});
  const auto* src = c.data_as<uint16_t>();
  auto* dst = out.data_as<uint16_t>();
  for (int64_t i = 0; i < C; ++i)
    for (int64_t rk = 0; rk < R; ++rk) dst[lowrank_index(i, rk, R, down)] = src[i * R + rk];
  return out;
}

Tensor unpack_lowrank(const Tensor& packed, int64_t C, bool down, const std::string& what) {
  check_dims(packed, 2, what, down ? "[Kp, R] BF16/F16" : "[Np, R] BF16/F16");
  check_half(packed, what);
  const int64_t Cp = packed.size(0), R = packed.size(1);
  if (R % 16 != 0) fail(what, "rank " + std::to_string(R) + " is not a multiple of 16 (" + desc(packed) + ")");
  if (Cp % 16 != 0) fail(what, "padded rows " + std::to_string(Cp) + " are not a multiple of 16");
  if (C < 1 || C > Cp) fail(what, "true rows " + std::to_string(C) + " do not fit " + desc(packed));
  const Tensor p = contiguous(packed);
  Tensor out = Tensor::zeros(packed.dtype(), {C, R});
  const auto* src = p.data_as<uint16_t>();
  auto* dst = out.data_as<uint16_t>();
  for (int64_t i = 0; i < C; ++i)
    for (int64_t rk = 0; rk < R; ++rk) dst[i * R + rk] = src[lowrank_index(i, rk, R, down)];
  return out;
}

}  // namespace

Tensor pack_lora_down(const Tensor& canonical, int64_t Kp, const std::string& what) { return pack_lowrank(canonical, Kp, true, what); }
Tensor unpack_lora_down(const Tensor& packed, int64_t K, const std::string& what) { return unpack_lowrank(packed, K, true, what); }
Tensor pack_lora_up(const Tensor& canonical, int64_t Np, const std::string& what) { return pack_lowrank(canonical, Np, false, what); }
Tensor unpack_lora_up(const Tensor& packed, int64_t N, const std::string& what) { return unpack_lowrank(packed, N, false, what); }

}  // namespace svdquant::nunchaku
