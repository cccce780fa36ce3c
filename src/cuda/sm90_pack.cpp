// Host-side repacking of canonical tensors into the cuda-sm90 layouts (sm90_layout.hpp).
#include "sm90_pack.hpp"

#include <algorithm>
#include <cstring>

#include "sm90_layout.hpp"
#include "smooth_div.hpp"
#include "svdquant/float_formats.hpp"

namespace svdquant::cuda {
Tensor contiguous_host(const Tensor& t) { return t.is_contiguous() ? t : t.clone(); }

std::vector<float> widen_padded(const Tensor& t, HalfKind dtype, int64_t rows, int64_t cols, int64_t rows_pad,
                                int64_t cols_pad) {
  const Tensor c = contiguous_host(t);
  const auto* src = c.data_as<uint16_t>();
  std::vector<float> out(size_t(rows_pad * cols_pad), 0.0f);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) out[size_t(i * cols_pad + j)] = half_to_f32(dtype, src[i * cols + j]);
  return out;
}

EpilogueVectors epilogue_vectors(const LayerWeights& w, int64_t Npad) {
  const int64_t N = w.desc.N;
  EpilogueVectors v{std::vector<float>(size_t(Npad), 1.0f), std::vector<float>(size_t(Npad), 0.0f)};
  if (w.wcscales.defined() && w.wcscales.numel() == N) {
    const std::vector<float> f = widen_padded(w.wcscales, w.desc.dtype, 1, N, 1, N);
    std::copy(f.begin(), f.end(), v.wcscales.begin());
  }
  if (w.desc.has_bias) {
    const std::vector<float> f = widen_padded(w.bias, w.desc.dtype, 1, N, 1, N);
    std::copy(f.begin(), f.end(), v.bias.begin());
  }
  return v;
}

std::vector<uint8_t> pack_weight_fragments(const Tensor& qweight, int64_t N, int64_t K) {
  const Tensor q = contiguous_host(qweight);
  const auto* src = q.data_as<uint8_t>();
  const int64_t G = K / kGroup, Nt = weight_tiles(N);
  std::vector<uint8_t> out(size_t(Nt * G * kWeightTileBytes), 0);
  auto nibble = [&](int64_t n, int64_t k) -> uint32_t {
    if (n >= N) return 0;
    const uint8_t b = src[n * (K / 2) + k / 2];
    return (k % 2 == 0) ? (b & 0xF) : (b >> 4);
  };
  for (int64_t nt = 0; nt < Nt; ++nt)
    for (int64_t g = 0; g < G; ++g) {
      uint8_t* tile = out.data() + (nt * G + g) * kWeightTileBytes;
      for (int wg = 0; wg < 2; ++wg)
        for (int tid = 0; tid < 128; ++tid) {
          uint32_t words[4] = {0, 0, 0, 0};
          const int g8 = (tid % 32) / 4, t = tid % 4;
          const int64_t row = nt * kTileN + wg * 64 + (tid / 32) * 16 + g8;
          for (int h = 0; h < 2; ++h)
            for (int reg = 0; reg < 4; ++reg)
              for (int i = 0; i < 4; ++i) {
                const int64_t n = row + 8 * (reg % 2);
                const int64_t k = g * kGroup + 32 * h + 16 * (reg / 2) + 4 * t + i;
                words[2 * h + reg / 2] |= nibble(n, k) << (16 * (reg % 2) + 4 * i);
              }
          std::memcpy(tile + (wg * 128 + tid) * 16, words, 16);
        }
    }
  return out;
}

std::vector<uint32_t> pack_proj_down(const Tensor& proj_down, int64_t K, int64_t R, int64_t Rpad) {
  const Tensor pd = contiguous_host(proj_down);
  const auto* src = pd.data_as<uint16_t>();
  const int64_t G = K / kGroup, RT = Rpad / 8;
  // 16 bytes per (group g, k half h, rank tile j, lane): word i = (pd[k][n], pd[k + 1][n]),
  // k = 64 g + 32 h + 8 t + 2 i, n = 8 j + lane / 4, t = lane % 4 (see act_quant.cu).
  std::vector<uint32_t> out(size_t(G * 2 * RT * 32 * 4), 0);
  auto at = [&](int64_t k, int64_t n) -> uint32_t { return n < R ? src[k * R + n] : 0; };
  for (int64_t g = 0; g < G; ++g)
    for (int h = 0; h < 2; ++h)
      for (int64_t j = 0; j < RT; ++j)
        for (int lane = 0; lane < 32; ++lane) {
          const int64_t n = j * 8 + lane / 4, kb = g * kGroup + 32 * h + 8 * (lane % 4);
          const size_t idx = size_t((((g * 2 + h) * RT + j) * 32 + lane) * 4);
          for (int i = 0; i < 4; ++i) out[idx + size_t(i)] = at(kb + 2 * i, n) | (at(kb + 2 * i + 1, n) << 16);
        }
  return out;
}

std::vector<float> pack_smooth_reciprocal(const Tensor& smooth, int64_t K) {
  const Tensor sm = contiguous_host(smooth);
  const HalfKind T = sm.dtype() == DType::BF16 ? HalfKind::BF16 : HalfKind::FP16;
  std::vector<float> out(size_t(2 * K));
  for (int64_t k = 0; k < K; ++k) {
    const SmoothRcp r = smooth_reciprocal(half_to_f32(T, sm.data_as<uint16_t>()[k]));
    out[size_t(2 * k)] = r.hi;
    out[size_t(2 * k + 1)] = r.lo;
  }
  return out;
}

}  // namespace svdquant::cuda
