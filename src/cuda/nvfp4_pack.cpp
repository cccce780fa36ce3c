#include "nvfp4_pack.hpp"

#include <cmath>
#include <cstring>

#include "nvfp4_kernels.hpp"
#include "sm90_pack.hpp"
#include "svdquant/float_formats.hpp"

namespace svdquant::cuda {

uint32_t nv_pack_word(const uint8_t (&codes)[8]) {
  uint32_t w = 0;
  for (int e = 0; e < 8; ++e) {
    const int q = e / 2, h = e % 2;
    const uint32_t c = codes[e] & 0xFu;
    w |= (c & 7u) << (9 - 3 * q + 16 * h);
    w |= ((c >> 3) & 1u) << (15 - q + 16 * h);
  }
  return w;
}

std::vector<uint8_t> pack_nvfp4_weights(const Tensor& qweight, const Tensor& wscales, int64_t N, int64_t K) {
  const Tensor q = contiguous_host(qweight), s = contiguous_host(wscales);
  const uint8_t* qc = q.data_as<uint8_t>();
  const uint8_t* sc = s.data_as<uint8_t>();
  const int64_t Npad = nv_round_up(N, kNvTileN), Kpad = nv_round_up(K, kNvTileK), KT = Kpad / kNvTileK;
  std::vector<uint8_t> out(size_t(Npad / kNvTileN * KT * kNvWStepBytes), 0);
  auto code = [&](int64_t n, int64_t k) -> uint8_t {
    if (n >= N || k >= K) return 0;
    const uint8_t b = qc[n * (K / 2) + k / 2];
    return k % 2 ? uint8_t(b >> 4) : uint8_t(b & 0xF);
  };
  // fp16 bits of s_w · 2^7 (exact: e4m3 has 4 significant bits and |s_w| <= 448, so the value is
  // at most 57344 < 65504 and at least 2^-2); NaN stays NaN.
  auto scale16 = [&](int64_t n, int64_t g) -> uint16_t {
    if (n >= N || g * kNvGroup >= K) return 0;
    const float v = e4m3_to_f32(sc[g * N + n]);
    return std::isnan(v) ? uint16_t(0x7E00) : f32_to_fp16(std::ldexp(v, kNvWScaleShift));
  };
  for (int64_t nt = 0; nt < Npad / kNvTileN; ++nt)
    for (int64_t kt = 0; kt < KT; ++kt)
      for (int b = 0; b < kNvTileN / kNvWBlock; ++b) {
        uint8_t* blk = out.data() + size_t(((nt * KT + kt) * (kNvTileN / kNvWBlock) + b) * kNvWBlockBytes);
        const int64_t nb = nt * kNvTileN + b * kNvWBlock;
        for (int t = 0; t < 128; ++t) {
          const int rw = (t / 32) * 16 + (t % 32) / 4, c = t % 4;
          for (int j = 0; j < 4; ++j) {
            uint8_t cs[8];
            for (int e = 0; e < 8; ++e) {
              const int qq = e / 2, h = e % 2;
              const int64_t n = nb + rw + 8 * (qq % 2), k = kt * kNvTileK + 16 * j + 2 * c + 8 * (qq / 2) + h;
              cs[e] = code(n, k);
            }
            const uint32_t w = nv_pack_word(cs);
            std::memcpy(blk + t * 16 + j * 4, &w, 4);
          }
        }
        for (int r = 0; r < kNvWBlock; ++r)
          for (int j = 0; j < 4; ++j) {
            const uint16_t v = scale16(nb + r, kt * 4 + j);
            std::memcpy(blk + 2048 + r * 8 + j * 2, &v, 2);
          }
      }
  return out;
}

}  // namespace svdquant::cuda
