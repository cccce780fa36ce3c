// The CPU reference: docs/NUMERICS.md, literally. Every rounding below is one the spec names.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "cpu_layer.hpp"
#include "parallel.hpp"
#include "svdquant/cpu_reference.hpp"
#include "svdquant/error.hpp"
#include "svdquant/float_formats.hpp"
#include "svdquant/layout_canonical.hpp"

namespace svdquant {
namespace detail {

namespace {
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
// f32(1/7), f32(1/15), f32(1/6): the constants of NUMERICS.md §3.
constexpr float kInv7 = 1.0f / 7.0f, kInv15 = 1.0f / 15.0f, kInv6 = 1.0f / 6.0f;

std::vector<float> widen(const Tensor& t, size_t n, float fill) {
  if (!t.data()) return std::vector<float>(n, fill);
  return to_f32_vector(t);
}
}  // namespace

CpuLayer make_cpu_layer(const LayerWeights& wt, const ForwardOptions& opt) {
  CpuLayer L;
  L.desc = wt.desc;
  L.opt = opt;
  const auto& d = wt.desc;
  L.G = group_size(d.precision);
  L.groups = d.K / L.G;
  Tensor codes = unpack_codes(wt.qweight, d.precision);
  L.w.resize(size_t(d.N * d.K));
  const int8_t* c = codes.data_as<int8_t>();
  for (int64_t i = 0; i < d.N * d.K; ++i)
    L.w[size_t(i)] = d.precision == Precision::INT4 ? c[i] : int8_t(std::lround(2.0f * e2m1_to_f32(uint8_t(c[i]))));
  std::vector<float> sw = to_f32_vector(wt.wscales);  // [groups][N]
  L.sw.resize(size_t(d.N * L.groups));
  for (int64_t g = 0; g < L.groups; ++g)
    for (int64_t n = 0; n < d.N; ++n) L.sw[size_t(n * L.groups + g)] = sw[size_t(g * d.N + n)];
  L.smooth = to_f32_vector(wt.smooth);
  L.down = to_f32_vector(wt.proj_down);
  L.up = to_f32_vector(wt.proj_up);
  L.bias = widen(wt.bias, size_t(d.N), 0.0f);
  L.wcscales = widen(wt.wcscales, size_t(d.N), 1.0f);
  L.alpha = wt.alpha();
  return L;
}

// NUMERICS.md §2.
void shift_smooth_row(const CpuLayer& L, const uint16_t* x, float* xs) {
  const HalfKind T = L.desc.dtype;
  for (int64_t k = 0; k < L.desc.K; ++k) {
    float v = half_to_f32(T, x[k]);
    if (L.desc.act_unsigned) v = round_half(T, v + kGeluShift);
    xs[k] = round_half(T, v / L.smooth[size_t(k)]);
  }
}

// NUMERICS.md §3 and §5.
void quantize_row(const CpuLayer& L, const float* xs, RowActivations& a) {
  const int64_t K = L.desc.K, G = L.G;
  const HalfKind T = L.desc.dtype;
  a.ints.assign(size_t(K), 0);
  if (L.opt.activations == Activations::FP8) {
    a.fp8.assign(size_t(K), 0);
    float amax = 0.0f;
    bool finite = true;
    for (int64_t k = 0; k < K; ++k) {
      finite &= std::isfinite(xs[k]);
      amax = std::max(amax, std::fabs(xs[k]));
    }
    const float s_row = finite ? amax / 448.0f : kNaN;
    a.scales.assign(1, s_row);
    if (!finite || s_row == 0.0f) return;
    for (int64_t k = 0; k < K; ++k) {
      uint8_t e = f32_to_e4m3(xs[k] / s_row);
      a.fp8[size_t(k)] = e;
      a.ints[size_t(k)] = int32_t(std::lround(e4m3_to_f32(e) * 512.0f));  // exact: e4m3 values are multiples of 2^-9
    }
    return;
  }
  a.codes.assign(size_t(K), 0);
  a.scales.assign(size_t(L.groups), 0.0f);
  a.scale_bits.assign(size_t(L.groups), 0);
  const bool int4 = L.desc.precision == Precision::INT4;
  const bool uns = L.desc.act_unsigned;
  for (int64_t g = 0; g < L.groups; ++g) {
    const float* v = xs + g * G;
    float amax = 0.0f;
    bool finite = true;
    for (int64_t i = 0; i < G; ++i) {
      finite &= std::isfinite(v[i]);
      amax = std::max(amax, std::fabs(v[i]));
    }
    uint16_t bits;
    float s;
    if (int4) {
      bits = finite ? f32_to_half(T, amax * (uns ? kInv15 : kInv7)) : f32_to_half(T, kNaN);
      s = half_to_f32(T, bits);
    } else {
      bits = finite ? f32_to_e4m3(std::min(amax * kInv6, 448.0f)) : uint8_t(0x7F);
      s = e4m3_to_f32(uint8_t(bits));
    }
    a.scale_bits[size_t(g)] = bits;
    a.scales[size_t(g)] = s;
    if (!finite || s == 0.0f) continue;  // codes stay 0 (NUMERICS.md §3, §6)
    const float r = 1.0f / s;
    for (int64_t i = 0; i < G; ++i) {
      const float t = v[i] * r;
      int8_t code;
      int32_t val;
      if (int4) {
        float q = std::nearbyint(t);
        q = uns ? std::clamp(q, 0.0f, 15.0f) : std::clamp(q, -8.0f, 7.0f);
        code = int8_t(q);
        val = code;
      } else {
        code = int8_t(f32_to_e2m1(t));
        val = int32_t(std::lround(2.0f * e2m1_to_f32(uint8_t(code))));
      }
      a.codes[size_t(g * G + i)] = code;
      a.ints[size_t(g * G + i)] = val;
    }
  }
}

// NUMERICS.md §4.3, first sum: l[r] = sum_k f32(x[k]) * f32(down[k][r]), k ascending.
void lowrank_row(const CpuLayer& L, const uint16_t* x, float* l) {
  const int64_t R = L.desc.R, K = L.desc.K;
  std::fill(l, l + R, 0.0f);
  for (int64_t k = 0; k < K; ++k) {
    const float xv = half_to_f32(L.desc.dtype, x[k]);
    const float* d = &L.down[size_t(k * R)];
    for (int64_t r = 0; r < R; ++r) l[r] = l[r] + xv * d[r];
  }
}

void output_row(const CpuLayer& L, const RowActivations& a, const float* l, int64_t n0, int64_t n1, uint16_t* out_t,
                float* out_f32) {
  const int64_t K = L.desc.K, G = L.G, R = L.desc.R;
  const HalfKind T = L.desc.dtype;
  const bool fp8 = L.opt.activations == Activations::FP8;
  const bool half = L.opt.accumulate == Accumulate::HALF;
  // Integer-domain scale of a code product: int4 x int4 = 1; e2m1 (x2) x e2m1 (x2) = 1/4;
  // fp8 (x512) x int4 = 1/512; fp8 (x512) x e2m1 (x2) = 1/1024. All powers of two: exact.
  const bool nv = L.desc.precision == Precision::NVFP4;
  const float unit = fp8 ? (nv ? 1.0f / 1024.0f : 1.0f / 512.0f) : (nv ? 0.25f : 1.0f);
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* w = &L.w[size_t(n * K)];
    const float* sw = &L.sw[size_t(n * L.groups)];
    float y;
    if (half) {  // §4.2
      float acc = 0.0f;
      for (int64_t g = 0; g < L.groups; ++g) {
        int32_t p = 0;
        for (int64_t i = g * G; i < (g + 1) * G; ++i) p += a.ints[size_t(i)] * int32_t(w[i]);
        const float pt = round_half(T, float(p) * unit);
        const float st = round_half(T, a.scales[size_t(g)] * sw[g]);
        acc = ref::half_fma(T, pt, st, acc);
      }
      y = acc * L.alpha;
    } else if (!fp8) {  // §4.1
      float acc = 0.0f;
      for (int64_t g = 0; g < L.groups; ++g) {
        int32_t p = 0;
        for (int64_t i = g * G; i < (g + 1) * G; ++i) p += a.ints[size_t(i)] * int32_t(w[i]);
        acc = acc + (float(p) * unit) * (a.scales[size_t(g)] * sw[g]);
      }
      y = acc * L.alpha;
    } else {  // §5: the group sum is an exact integer (< 2^31) times a power of two
      float acc = 0.0f;
      for (int64_t g = 0; g < L.groups; ++g) {
        int32_t p = 0;
        for (int64_t i = g * G; i < (g + 1) * G; ++i) p += a.ints[size_t(i)] * int32_t(w[i]);
        acc = acc + (float(p) * unit) * sw[g];
      }
      y = (acc * a.scales[0]) * L.alpha;
    }
    y = y * L.wcscales[size_t(n)] + L.bias[size_t(n)];
    const float* up = &L.up[size_t(n * R)];
    float u = 0.0f;
    for (int64_t r = 0; r < R; ++r) u = u + l[r] * up[r];
    if (out_t) out_t[n] = f32_to_half(T, y + u);
    else out_f32[n] = y + u;
  }
}

}  // namespace detail

namespace ref {

using detail::CpuLayer;

namespace {
void check_input(const Tensor& x, const LayerWeights& w) {
  const DType T = w.desc.dtype == HalfKind::BF16 ? DType::BF16 : DType::F16;
  if (x.device().type != DeviceType::CPU) throw Error("the CPU reference needs host tensors");
  if (x.dim() != 2 || x.size(1) != w.desc.K || x.dtype() != T || !x.is_contiguous())
    throw FormatError("input x: expected contiguous " + std::string(dtype_name(T)) + " [M, " + std::to_string(w.desc.K) +
                      "], found " + std::string(dtype_name(x.dtype())) + " " + shape_str(x.shape()));
}
}  // namespace

float half_fma(HalfKind t, float a, float b, float c) {
  // a*b is exact in double (at most 22 significant bits); TwoSum gives s + e == a*b + c exactly.
  const double p = double(a) * double(b);
  const double s = p + double(c);
  const double bb = s - p;
  const double e = (p - (s - bb)) + (double(c) - bb);
  if (!std::isfinite(s)) return float(s);  // inf/NaN propagate; overflow to inf is the T result too
  return half_to_f32(t, f64_to_half(t, s, e));
}

std::vector<float> shift_and_smooth(const Tensor& x, const LayerWeights& w) {
  check_input(x, w);
  CpuLayer L = detail::make_cpu_layer(w, {});
  const int64_t M = x.size(0), K = w.desc.K;
  std::vector<float> xs(static_cast<size_t>(M * K));
  for (int64_t m = 0; m < M; ++m) detail::shift_smooth_row(L, x.data_as<uint16_t>() + m * K, &xs[size_t(m * K)]);
  return xs;
}

QuantizedActivations quantize_activations(const Tensor& x, const LayerWeights& w, Activations mode) {
  check_input(x, w);
  ForwardOptions opt;
  opt.activations = mode == Activations::AUTO ? Activations::CHECKPOINT : mode;
  CpuLayer L = detail::make_cpu_layer(w, opt);
  const int64_t M = x.size(0), K = w.desc.K;
  QuantizedActivations q;
  q.mode = mode;
  q.precision = w.desc.precision;
  q.M = M;
  q.K = K;
  const DType T = w.desc.dtype == HalfKind::BF16 ? DType::BF16 : DType::F16;
  if (mode == Activations::FP8) {
    q.codes = Tensor::zeros(DType::F8_E4M3, {M, K});
    q.scales = Tensor::zeros(DType::F32, {M});
  } else {
    q.codes = Tensor::zeros(DType::I8, {M, K});
    q.scales = Tensor::zeros(w.desc.precision == Precision::INT4 ? T : DType::F8_E4M3, {M, L.groups});
  }
  std::vector<float> xs(static_cast<size_t>(K));
  detail::RowActivations a;
  for (int64_t m = 0; m < M; ++m) {
    detail::shift_smooth_row(L, x.data_as<uint16_t>() + m * K, xs.data());
    detail::quantize_row(L, xs.data(), a);
    if (mode == Activations::FP8) {
      std::memcpy(q.codes.data_as<uint8_t>() + m * K, a.fp8.data(), size_t(K));
      q.scales.data_as<float>()[m] = a.scales[0];
    } else {
      std::memcpy(q.codes.data_as<int8_t>() + m * K, a.codes.data(), size_t(K));
      for (int64_t g = 0; g < L.groups; ++g) {
        if (w.desc.precision == Precision::INT4) q.scales.data_as<uint16_t>()[m * L.groups + g] = a.scale_bits[size_t(g)];
        else q.scales.data_as<uint8_t>()[m * L.groups + g] = uint8_t(a.scale_bits[size_t(g)]);
      }
    }
  }
  return q;
}

std::vector<float> lowrank_down(const Tensor& x, const LayerWeights& w) {
  check_input(x, w);
  CpuLayer L = detail::make_cpu_layer(w, {});
  const int64_t M = x.size(0), K = w.desc.K, R = w.desc.R;
  std::vector<float> l(static_cast<size_t>(M * R));
  for (int64_t m = 0; m < M; ++m) detail::lowrank_row(L, x.data_as<uint16_t>() + m * K, &l[size_t(m * R)]);
  return l;
}

Tensor forward(const Tensor& x, const LayerWeights& w, const ForwardOptions& opt, int threads);

}  // namespace ref
}  // namespace svdquant
