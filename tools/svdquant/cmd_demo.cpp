// svdquant demo: the main job on a built-in default. Generates a DiT-like transformer block at real
// widths (hidden 3072, MLP 12288) with outlier input channels, quantizes each linear layer with
// SVDQuant (and with plain round-to-nearest W4A4 for comparison), runs it on the best backend present
// and prints each layer's error against the 16-bit layer and the time taken.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <thread>

#include "cli_util.hpp"
#include "commands.hpp"
#include "svdquant/error.hpp"
#include "svdquant/float_formats.hpp"
#include "svdquant/linear.hpp"
#include "svdquant/quantize.hpp"

namespace svdquant::cli {
namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

struct DemoLayer {
  std::string name;
  int64_t K, N;
  bool gelu_input;  // consumes GELU outputs: act_unsigned (int4)
};

// A weight with a decaying spectrum (a few strong directions on top of Gaussian noise), rounded to
// bf16 like a real 16-bit checkpoint.
std::vector<float> make_weight(int64_t N, int64_t K, std::mt19937_64& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> W(size_t(N * K));
  const float s = 1.0f / std::sqrt(float(K));
  for (auto& v : W) v = nd(rng) * s;
  for (int j = 0; j < 16; ++j) {
    std::vector<float> u(static_cast<size_t>(N)), v(static_cast<size_t>(K));
    for (auto& e : u) e = nd(rng);
    for (auto& e : v) e = nd(rng);
    const float c = 4.0f * s / std::sqrt(float(N)) * std::pow(0.75f, float(j));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) W[size_t(n * K + k)] += c * u[size_t(n)] * v[size_t(k)];
  }
  for (auto& v : W) v = bf16_to_f32(f32_to_bf16(v));
  return W;
}

// Activations with a few outlier channels (x20..x60), or GELU outputs of such activations.
std::vector<float> make_input(int64_t M, int64_t K, bool gelu, std::mt19937_64& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> chscale(size_t(K), 1.0f);
  std::uniform_int_distribution<int64_t> pick(0, K - 1);
  for (int i = 0; i < 8; ++i) chscale[size_t(pick(rng))] = 20.0f + 5.0f * float(i);
  std::vector<float> x(static_cast<size_t>(M * K));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) {
      float v = nd(rng) * chscale[size_t(k)];
      if (gelu) v = 0.5f * v * (1.0f + std::erf(v / std::sqrt(2.0f)));
      x[size_t(m * K + k)] = bf16_to_f32(f32_to_bf16(v));
    }
  return x;
}

// The 16-bit layer: y = x W^T + b in float64 accumulation (bf16 inputs), multi-threaded over rows.
std::vector<double> dense_reference(const std::vector<float>& x, const std::vector<float>& W, const std::vector<float>& b,
                                    int64_t M, int64_t N, int64_t K) {
  std::vector<double> y(static_cast<size_t>(M * N));
  unsigned T = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < T; ++t)
    pool.emplace_back([&, t] {
      for (int64_t m = t; m < M; m += T)
        for (int64_t n = 0; n < N; ++n) {
          const float* xr = &x[size_t(m * K)];
          const float* wr = &W[size_t(n * K)];
          double acc = 0;
          for (int64_t k = 0; k < K; ++k) acc += double(xr[k]) * double(wr[k]);
          y[size_t(m * N + n)] = acc + b[size_t(n)];
        }
    });
  for (auto& th : pool) th.join();
  return y;
}

double rel_err(const Tensor& y, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    double d = element_as_double(y, int64_t(i)) - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / den);
}

}  // namespace

void add_demo_command(CLI::App& app) {
  struct Args {
    int64_t tokens = 64, hidden = 3072, mlp = 12288;
    int rank = 32;
    uint64_t seed = 0;
    std::string precision = "int4", backend = "auto";
    bool rtn = true;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("demo", "Quantize a synthetic DiT block (hidden 3072, MLP 12288) and report error and time");
  cmd->add_option("--tokens", a->tokens, "Rows of the input (tokens)")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--hidden", a->hidden, "Hidden width")->capture_default_str()->check(CLI::Range(64, 1 << 16));
  cmd->add_option("--mlp", a->mlp, "MLP width")->capture_default_str()->check(CLI::Range(64, 1 << 18));
  cmd->add_option("--rank", a->rank, "Low-rank branch rank")->capture_default_str()->check(CLI::Range(0, 1024));
  cmd->add_option("--precision", a->precision, "int4 | nvfp4")->capture_default_str();
  cmd->add_option("--backend", a->backend, "auto | cpu | cuda")->capture_default_str();
  cmd->add_option("--seed", a->seed, "Random seed")->capture_default_str();
  cmd->add_flag("!--no-rtn", a->rtn, "Skip the plain round-to-nearest W4A4 comparison");
  cmd->callback([a] {
    const Precision prec = parse_precision(a->precision, "--precision");
    const int64_t G = group_size(prec);
    if (a->hidden % G || a->mlp % G)
      throw ConfigError("--hidden and --mlp must be multiples of the group size " + std::to_string(G));
    const std::vector<DemoLayer> layers = {
        {"attn.to_qkv", a->hidden, 3 * a->hidden, false},
        {"attn.to_out", a->hidden, a->hidden, false},
        {"ff.net.0.proj (fc1)", a->hidden, a->mlp, false},
        {"ff.net.2 (fc2)", a->mlp, a->hidden, true},
    };
    std::mt19937_64 rng(a->seed);
    auto total0 = Clock::now();
    std::printf("svdquant demo: DiT block, hidden %lld, MLP %lld, %lld tokens, %s rank %d, bf16\n", (long long)a->hidden,
                (long long)a->mlp, (long long)a->tokens, a->precision.c_str(), a->rank);
    std::printf("%-22s %13s %10s %10s %12s %10s %9s  %s\n", "layer", "K -> N", "err svdq", "err rtn", "quantize ms", "forward ms",
                "backend", "activations");
    double worst_ratio = 0;
    for (const auto& L : layers) {
      std::vector<float> W = make_weight(L.N, L.K, rng);
      std::vector<float> b(static_cast<size_t>(L.N));
      std::normal_distribution<float> nd(0.0f, 0.02f);
      for (auto& v : b) v = bf16_to_f32(f32_to_bf16(nd(rng)));
      std::vector<float> x = make_input(a->tokens, L.K, L.gelu_input, rng);
      std::vector<float> absmax(size_t(L.K), 0.0f);
      for (int64_t m = 0; m < a->tokens; ++m)
        for (int64_t k = 0; k < L.K; ++k) absmax[size_t(k)] = std::max(absmax[size_t(k)], std::fabs(x[size_t(m * L.K + k)]));
      Tensor xt = Tensor::zeros(DType::BF16, {a->tokens, L.K});
      for (size_t i = 0; i < x.size(); ++i) xt.data_as<uint16_t>()[i] = f32_to_bf16(x[i]);
      const std::vector<double> ref = dense_reference(x, W, b, a->tokens, L.N, L.K);

      QuantizeOptions qo;
      qo.precision = prec;
      qo.rank = a->rank;
      qo.act_unsigned = L.gelu_input && prec == Precision::INT4;
      auto tq = Clock::now();
      LayerWeights qw = quantize_linear(W, L.N, L.K, b, absmax, qo);
      const double q_ms = ms_since(tq);
      LinearOptions lo;
      lo.backend = a->backend;
      SVDQuantLinear lin(qw, lo);
      auto tf = Clock::now();
      Tensor y = lin.forward(xt);
      const double f_ms = ms_since(tf);
      const double err = rel_err(y, ref);
      double err_rtn = NAN;
      if (a->rtn) {
        QuantizeOptions ro = qo;
        ro.rank = 0;
        ro.alpha = 0.0f;
        SVDQuantLinear rtn(quantize_linear(W, L.N, L.K, b, absmax, ro), lo);
        err_rtn = rel_err(rtn.forward(xt), ref);
        worst_ratio = std::max(worst_ratio, err / err_rtn);
      }
      char shape[32];
      std::snprintf(shape, sizeof shape, "%lld -> %lld", (long long)L.K, (long long)L.N);
      std::printf("%-22s %13s %10.4f %10.4f %12.0f %10.1f %9s  %s\n", L.name.c_str(), shape, err, err_rtn, q_ms, f_ms,
                  std::string(lin.backend().name()).c_str(), std::string(to_string(lin.options().activations)).c_str());
      std::fflush(stdout);
    }
    std::printf("errors: relative L2 against the 16-bit layer (bf16 weights and inputs, float64 sums)\n");
    if (a->rtn) std::printf("worst SVDQuant/RTN error ratio: %.2f\n", worst_ratio);
    std::printf("total time: %.1f s\n", ms_since(total0) / 1000.0);
  });
}

}  // namespace svdquant::cli
