// The whole cuda-sm90 layer against the CPU reference (NUMERICS.md §4): random layers with
// outlier channels, odd shapes, signed and unsigned activations, bf16 and fp16, both accumulation
// modes; `half` bitwise where the GEMM alone decides the output; the nunchaku fixtures;
// determinism, non-finite inputs, device tensors on a stream and bad input.
#include <gtest/gtest.h>

#include "cuda_test_util.hpp"

#ifdef SVDQUANT_HAVE_CUDA
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <limits>
#include <vector>
#include <nlohmann/json.hpp>

#include "sm90_layer.hpp"
#include "svdquant/cpu_reference.hpp"
#include "svdquant/error.hpp"
#include "svdquant/layout_canonical.hpp"
#include "svdquant/safetensors.hpp"

using namespace svdquant;

namespace {

// 4-bit activations throughout this file (Activations::AUTO would pick fp8 on cuda-sm90).
// `cluster`: the GEMM's cluster size (0: the layer's own choice).
// `path`: how the GEMM gets its weights (Sm90Layer::set_weight_path).
using WeightPath = cuda::Sm90Layer::WeightPath;
Tensor gpu_forward(const LayerWeights& w, const Tensor& x, Accumulate acc, int cluster = 0,
                   Activations act = Activations::CHECKPOINT, WeightPath path = WeightPath::AUTO) {
  ForwardOptions opt;
  opt.accumulate = acc;
  opt.activations = act;
  const Backend* b = cudatest::cuda_backend();
  auto layer = b->prepare(w, opt);
  if (cluster != 0 || path != WeightPath::AUTO) {  // int4 layers only (an nvfp4 layer has its own GEMM)
    auto* sm90 = dynamic_cast<cuda::Sm90Layer*>(layer.get());
    if (!sm90) throw std::runtime_error("cuda-sm90 prepared a layer that is not an Sm90Layer");
    sm90->set_gemm_cluster(cluster);
    sm90->set_weight_path(path);
  }
  return b->forward_host(*layer, x);
}

// Every cluster size, and the GEMM on weights expanded to e4m3 beforehand, computes every output
// element in the same order (the same group fold and epilogue), so the outputs are bitwise equal;
// the cases include column-tile groups with surplus CTAs (N = 200, 256, 136 with clusters of 4,
// N = 384, 520 with clusters of 2 and 4).
void expect_clusters_bitwise_equal(const LayerWeights& w, const Tensor& x, Accumulate acc, Activations act) {
  const Tensor a = gpu_forward(w, x, acc, 1, act, WeightPath::REGISTERS);
  for (const int cluster : {2, 4, 0}) {  // 0: no cluster, weights expanded to e4m3 first
    const Tensor b = cluster != 0 ? gpu_forward(w, x, acc, cluster, act, WeightPath::REGISTERS)
                                  : gpu_forward(w, x, acc, 1, act, WeightPath::EXPANDED);
    ASSERT_EQ(a.shape(), b.shape());
    ASSERT_EQ(a.nbytes(), b.nbytes());
    int64_t differ = 0, first = -1;
    const auto* pa = a.data_as<uint16_t>();
    const auto* pb = b.data_as<uint16_t>();
    for (int64_t i = 0; i < a.numel(); ++i)
      if (pa[i] != pb[i] && !(std::isnan(element_as_double(a, i)) && std::isnan(element_as_double(b, i)))) {
        if (first < 0) first = i;
        ++differ;
      }
    EXPECT_EQ(differ, 0) << (cluster != 0 ? "cluster " + std::to_string(cluster) : std::string("expanded weights"))
                         << ": first at " << first << ": "
                         << element_as_double(b, std::max<int64_t>(first, 0)) << ", without cluster "
                         << element_as_double(a, std::max<int64_t>(first, 0));
  }
}

Tensor cpu_forward(const LayerWeights& w, const Tensor& x, Accumulate acc) {
  ForwardOptions opt;
  opt.accumulate = acc;
  opt.activations = Activations::CHECKPOINT;
  return ref::forward(x, w, opt);
}

struct LayerCase {
  int64_t M, N, K, R;
  HalfKind dtype;
  bool act_unsigned;
  Accumulate acc;
};

std::string case_name(const ::testing::TestParamInfo<LayerCase>& i) {
  const LayerCase& c = i.param;
  return "M" + std::to_string(c.M) + "_N" + std::to_string(c.N) + "_K" + std::to_string(c.K) + "_R" +
         std::to_string(c.R) + (c.dtype == HalfKind::BF16 ? "_bf16" : "_fp16") + (c.act_unsigned ? "_unsigned" : "_signed") +
         (c.acc == Accumulate::HALF ? "_half" : "_fp32");
}

class CudaLayer : public ::testing::TestWithParam<LayerCase> {};

// Full layer (bias, wcscales, low-rank): the low-rank sums and (fp32 mode) the group sums run in
// another order than the CPU's, so outputs may differ by float32 rounding of those sums: one unit
// in T's last place after the final rounding, rarely, or more where the output is a cancellation
// of much larger terms (bounded by fp32_sum_tolerance).
TEST_P(CudaLayer, MatchesCpuReference) {
  SVDQUANT_SKIP_WITHOUT_HOPPER();
  const LayerCase c = GetParam();
  const cudatest::LayerSpec s{c.N, c.K, c.R, c.dtype, c.act_unsigned};
  const uint64_t seed = uint64_t(c.M * 131 + c.N * 17 + c.K);
  const LayerWeights w = cudatest::random_layer(s, seed);
  const Tensor x = cudatest::random_input(c.M, c.K, c.dtype, c.act_unsigned, seed + 1);
  const Tensor y = gpu_forward(w, x, c.acc), r = cpu_forward(w, x, c.acc);
  ASSERT_EQ(y.shape(), r.shape());
  const double atol = cudatest::fp32_sum_tolerance(r, c.K);
  const auto st = cudatest::compare_ulp(y, r, c.dtype, atol);
  const int64_t i = std::max<int64_t>(st.first_beyond, 0);
  EXPECT_EQ(st.beyond_tolerance, 0) << "first at " << i << ": gpu " << element_as_double(y, i) << " cpu "
                                    << element_as_double(r, i) << " (atol " << atol << ")";
  EXPECT_LE(double(st.differing), 0.01 * double(r.numel()) + 1) << st.differing << " of " << r.numel() << " differ";
  EXPECT_LT(cudatest::rel_l2(y, r), 1e-3);
  expect_clusters_bitwise_equal(w, x, c.acc, Activations::CHECKPOINT);
  expect_clusters_bitwise_equal(w, x, Accumulate::FP32, Activations::FP8);  // fp8 needs fp32 accumulation
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaLayer,
    ::testing::Values(LayerCase{1, 256, 512, 32, HalfKind::BF16, false, Accumulate::FP32},
                      LayerCase{7, 200, 256, 32, HalfKind::BF16, false, Accumulate::HALF},
                      LayerCase{7, 136, 640, 16, HalfKind::FP16, true, Accumulate::FP32},
                      // K / 64 odd: the GEMM's last stage of each tile holds one group.
                      LayerCase{33, 256, 192, 16, HalfKind::BF16, false, Accumulate::HALF},
                      LayerCase{129, 384, 320, 32, HalfKind::FP16, false, Accumulate::FP32},
                      LayerCase{5, 128, 64, 8, HalfKind::BF16, true, Accumulate::FP32},
                      LayerCase{130, 384, 1024, 128, HalfKind::FP16, false, Accumulate::HALF},
                      LayerCase{256, 1000, 1024, 0, HalfKind::BF16, true, Accumulate::HALF},
                      LayerCase{300, 520, 3072, 32, HalfKind::BF16, false, Accumulate::FP32},
                      LayerCase{4609, 200, 256, 32, HalfKind::BF16, false, Accumulate::FP32},
                      LayerCase{4609, 136, 128, 8, HalfKind::FP16, true, Accumulate::HALF}),
    case_name);

// Split-K (small M, fp32 and fp8 accumulation, the layer's own cluster choice): the splits'
// partial sums are added in split order, so two calls give bitwise the same output, and the
// result is the unsplit one (a pinned cluster of 1 never splits) up to float32 rounding of the
// group sums. The shapes take 2, 3 and 4 splits on a 132-SM part; M = 200 and M = 1 leave the
// last row tile partly or mostly empty.
struct SplitCase {
  int64_t M, N, K;
  int splits_on_132;
};

class CudaLayerSplitK : public ::testing::TestWithParam<SplitCase> {};

TEST_P(CudaLayerSplitK, DeterministicAndCloseToUnsplit) {
  SVDQUANT_SKIP_WITHOUT_HOPPER();
  const SplitCase c = GetParam();
  const cudatest::LayerSpec s{c.N, c.K, 32, HalfKind::BF16, false};
  ASSERT_EQ(cuda::gemm_splits(c.M, s.N, s.K, 132), c.splits_on_132);  // the case takes the split it is for
  const LayerWeights w = cudatest::random_layer(s, 777 + uint64_t(c.N));
  const Tensor x = cudatest::random_input(c.M, s.K, s.dtype, false, 778 + uint64_t(c.M));
  for (const Activations act : {Activations::CHECKPOINT, Activations::FP8}) {
    const Tensor a = gpu_forward(w, x, Accumulate::FP32, 0, act), b = gpu_forward(w, x, Accumulate::FP32, 0, act);
    EXPECT_EQ(cudatest::compare_ulp(a, b, s.dtype).differing, 0) << "split-K is not deterministic";
    const Tensor u = gpu_forward(w, x, Accumulate::FP32, 1, act);
    const auto st = cudatest::compare_ulp(a, u, s.dtype, cudatest::fp32_sum_tolerance(u, s.K));
    EXPECT_EQ(st.beyond_tolerance, 0) << "split and unsplit differ beyond float32 rounding";
    EXPECT_LT(cudatest::rel_l2(a, u), 1e-4);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaLayerSplitK,
                         ::testing::Values(SplitCase{256, 384, 3072, 4}, SplitCase{200, 3072, 3072, 2},
                                           SplitCase{256, 2304, 3072, 3}, SplitCase{1, 384, 3072, 4}),
                         [](const ::testing::TestParamInfo<SplitCase>& i) {
                           return "M" + std::to_string(i.param.M) + "_N" + std::to_string(i.param.N) + "_S" +
                                  std::to_string(i.param.splits_on_132);
                         });

// §4.2: with no low-rank branch, bias or wcscales the output is T(f32(acc)) = acc, so the GEMM's
// group accumulation in T is compared bit for bit.
class CudaHalfBitwise : public ::testing::TestWithParam<std::tuple<HalfKind, bool>> {};

TEST_P(CudaHalfBitwise, GroupAccumulationIsBitwiseTheCpus) {
  SVDQUANT_SKIP_WITHOUT_HOPPER();
  cudatest::LayerSpec s;
  s.N = 264;
  s.K = 2048;
  s.R = 16;
  s.dtype = std::get<0>(GetParam());
  s.act_unsigned = std::get<1>(GetParam());
  s.bias = false;
  s.wcscales = false;
  s.zero_lowrank = true;
  const LayerWeights w = cudatest::random_layer(s, 4242);
  const Tensor x = cudatest::random_input(203, s.K, s.dtype, s.act_unsigned, 4243);
  const Tensor y = gpu_forward(w, x, Accumulate::HALF), r = cpu_forward(w, x, Accumulate::HALF);
  const auto st = cudatest::compare_ulp(y, r, s.dtype);
  EXPECT_EQ(st.differing, 0) << "max " << st.max_ulp << " ulp at " << st.first_bad;
  // The same layer in fp32 mode differs from half mode (the check above is not vacuous).
  const Tensor y32 = gpu_forward(w, x, Accumulate::FP32);
  EXPECT_GT(cudatest::compare_ulp(y32, y, s.dtype).differing, 0);
}

INSTANTIATE_TEST_SUITE_P(Types, CudaHalfBitwise,
                         ::testing::Combine(::testing::Values(HalfKind::BF16, HalfKind::FP16), ::testing::Bool()));

// The nunchaku fixtures (tests/data) against the CPU and the float64 reference (nvfp4: fp32
// accumulation only, half is refused).
class CudaFixture : public ::testing::TestWithParam<const char*> {};

TEST_P(CudaFixture, MatchesCpuAndFloat64Reference) {
  SVDQUANT_SKIP_WITHOUT_HOPPER();
  const std::string name = GetParam();
  SafetensorsFile f = SafetensorsFile::open(std::string(SVDQUANT_CUDA_TEST_DATA) + "/" + name + ".safetensors");
  const auto meta = nlohmann::json::parse(f.metadata().at("case"));
  const Precision prec = parse_precision(meta["precision"].get<std::string>());
  LayerWeights w;
  w.prefix = name;
  w.qweight = pack_codes(f.tensor("canonical.codes"), prec);
  w.wscales = f.tensor("canonical.wscales");
  w.smooth = f.tensor("canonical.smooth");
  w.proj_down = f.tensor("canonical.proj_down");
  w.proj_up = f.tensor("canonical.proj_up");
  w.bias = f.tensor("canonical.bias");
  w.wcscales = f.tensor("canonical.wcscales");
  w.wtscale = f.tensor("canonical.wtscale");
  w.validate(prec, meta["act_unsigned"].get<bool>());
  const Backend* b = cudatest::cuda_backend();
  std::vector<Accumulate> modes{Accumulate::FP32, Accumulate::HALF};
  if (prec == Precision::NVFP4) {  // fp32 accumulation only; half is refused
    ForwardOptions half;
    half.accumulate = Accumulate::HALF;
    const auto why = b->unsupported_reason(w.desc, half);
    ASSERT_TRUE(why.has_value());
    EXPECT_NE(why->find("nvfp4"), std::string::npos);
    EXPECT_THROW(b->prepare(w, half), UnsupportedError);
    modes = {Accumulate::FP32};
  }
  const Tensor x = f.tensor("forward.x"), y64 = f.tensor("forward.y_ref_f64");
  for (Accumulate acc : modes) {
    const Tensor y = gpu_forward(w, x, acc), r = cpu_forward(w, x, acc);
    const auto st = cudatest::compare_ulp(
        y, r, w.desc.dtype, cudatest::fp32_sum_tolerance(r, prec == Precision::NVFP4 ? 4 * w.desc.K : w.desc.K));  // groups of 16
    EXPECT_EQ(st.beyond_tolerance, 0) << name << " " << to_string(acc);
    EXPECT_LE(double(st.differing), 0.01 * double(r.numel()) + 1) << st.differing << " of " << r.numel() << " differ";
    // As accurate as the CPU reference against float64 (up to those rare last-place flips).
    const double e_gpu = cudatest::rel_l2(y, y64), e_cpu = cudatest::rel_l2(r, y64);
    EXPECT_LT(e_gpu, 1.05 * e_cpu + 1e-5) << name << " " << to_string(acc) << ": gpu " << e_gpu << " cpu " << e_cpu;
    EXPECT_LT(e_gpu, acc == Accumulate::FP32 ? 3e-3 : 1e-2) << name;
    std::printf("[ fixture  ] %s %s: rel_l2 vs float64 gpu %.3e cpu %.3e, %lld of %lld differ\n", name.c_str(),
                std::string(to_string(acc)).c_str(), e_gpu, e_cpu, (long long)st.differing, (long long)r.numel());
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaFixture,
                         ::testing::Values("int4_k256_n256_r32", "int4_unsigned_k512_n128_r32", "nvfp4_k256_n256_r32"));

TEST(CudaLayerRuns, DeterministicAcrossCallsAndStreams) {
  SVDQUANT_SKIP_WITHOUT_HOPPER();
  cudatest::LayerSpec s;
  s.N = 640;
  s.K = 1536;
  s.R = 32;
  const LayerWeights w = cudatest::random_layer(s, 9);
  const Tensor x = cudatest::random_input(515, s.K, s.dtype, false, 10);
  const Backend* b = cudatest::cuda_backend();
  auto layer = b->prepare(w, {});
  const Tensor y1 = b->forward_host(*layer, x);
  const Tensor y2 = b->forward_host(*layer, x);
  EXPECT_EQ(std::memcmp(y1.data(), y2.data(), y1.nbytes()), 0);

  // Device tensors on a user stream, output poisoned first; a smaller M reuses the workspace.
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  void *dx = nullptr, *dy = nullptr;
  ASSERT_EQ(cudaMalloc(&dx, x.nbytes()), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dy, y1.nbytes()), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dx, x.data(), x.nbytes(), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemset(dy, 0xFF, y1.nbytes()), cudaSuccess);
  const Device dev{DeviceType::CUDA, 0};
  const int64_t Msub = 100;
  Tensor tx = Tensor::wrap(dx, x.dtype(), {Msub, s.K}, dev);
  Tensor ty = Tensor::wrap(dy, x.dtype(), {Msub, s.N}, dev);
  b->forward(*layer, tx, ty, stream);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  std::vector<uint16_t> host(size_t(Msub * s.N));
  ASSERT_EQ(cudaMemcpy(host.data(), dy, host.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(std::memcmp(host.data(), y1.data(), host.size() * 2), 0) << "rows do not depend on M";
  // The rows beyond Msub were not touched.
  uint16_t after = 0;
  ASSERT_EQ(cudaMemcpy(&after, static_cast<uint16_t*>(dy) + Msub * s.N, 2, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(after, 0xFFFF);
  cudaFree(dx);
  cudaFree(dy);
  cudaStreamDestroy(stream);
}

// CUDA graphs (how torch.compile and CUDA-graph users run a layer): a call captured on one stream
// after eager calls on another replays to the eager result bit for bit, eager calls on any stream
// keep working afterwards, and a capture that would need a larger workspace is refused clearly.
TEST(CudaLayerRuns, CudaGraphCaptureOnAnotherStream) {
  SVDQUANT_SKIP_WITHOUT_HOPPER();
  cudatest::LayerSpec s;
  s.N = 384;
  s.K = 1024;
  s.R = 32;
  const LayerWeights w = cudatest::random_layer(s, 31);
  const int64_t M = 200;
  const Tensor x = cudatest::random_input(M, s.K, s.dtype, false, 32);
  const Backend* b = cudatest::cuda_backend();
  auto layer = b->prepare(w, {});
  const Tensor ref = b->forward_host(*layer, x);  // default stream
  cudaStream_t capture_stream = nullptr, other = nullptr;
  ASSERT_EQ(cudaStreamCreate(&capture_stream), cudaSuccess);
  ASSERT_EQ(cudaStreamCreate(&other), cudaSuccess);
  void *dx = nullptr, *dy = nullptr, *dbig = nullptr, *dybig = nullptr;
  ASSERT_EQ(cudaMalloc(&dx, x.nbytes()), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dy, ref.nbytes()), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dx, x.data(), x.nbytes(), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemset(dy, 0xFF, ref.nbytes()), cudaSuccess);
  const Device dev{DeviceType::CUDA, 0};
  const Tensor tx = Tensor::wrap(dx, x.dtype(), {M, s.K}, dev);
  Tensor ty = Tensor::wrap(dy, x.dtype(), {M, s.N}, dev);

  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(capture_stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  b->forward(*layer, tx, ty, capture_stream);
  ASSERT_EQ(cudaStreamEndCapture(capture_stream, &graph), cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, capture_stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(capture_stream), cudaSuccess);
  std::vector<uint16_t> host(size_t(M * s.N));
  ASSERT_EQ(cudaMemcpy(host.data(), dy, host.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(std::memcmp(host.data(), ref.data(), ref.nbytes()), 0) << "graph replay differs from the eager call";

  // Eager calls on another stream after the capture, then a replay again.
  ASSERT_EQ(cudaMemset(dy, 0xFF, ref.nbytes()), cudaSuccess);
  EXPECT_NO_THROW(b->forward(*layer, tx, ty, other));
  ASSERT_EQ(cudaStreamSynchronize(other), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(host.data(), dy, host.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(std::memcmp(host.data(), ref.data(), ref.nbytes()), 0);
  ASSERT_EQ(cudaGraphLaunch(exec, capture_stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(capture_stream), cudaSuccess);

  // More rows than the workspace holds: refused inside the capture, with the reason.
  const int64_t Mbig = 1000;
  ASSERT_EQ(cudaMalloc(&dbig, size_t(Mbig * s.K * 2)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dybig, size_t(Mbig * s.N * 2)), cudaSuccess);
  const Tensor tbig = Tensor::wrap(dbig, x.dtype(), {Mbig, s.K}, dev);
  Tensor tybig = Tensor::wrap(dybig, x.dtype(), {Mbig, s.N}, dev);
  ASSERT_EQ(cudaStreamBeginCapture(capture_stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  try {
    b->forward(*layer, tbig, tybig, capture_stream);
    ADD_FAILURE() << "a capture needing a larger workspace was accepted";
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("outside the capture"), std::string::npos) << e.what();
  }
  cudaGraph_t empty = nullptr;
  cudaStreamEndCapture(capture_stream, &empty);
  if (empty) cudaGraphDestroy(empty);
  (void)cudaGetLastError();
  // The first graph still replays correctly after the workspace grows for an eager call.
  EXPECT_NO_THROW(b->forward(*layer, tbig, tybig, other));
  ASSERT_EQ(cudaStreamSynchronize(other), cudaSuccess);
  ASSERT_EQ(cudaMemset(dy, 0xFF, ref.nbytes()), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, capture_stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(capture_stream), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(host.data(), dy, host.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(std::memcmp(host.data(), ref.data(), ref.nbytes()), 0) << "the graph's workspace was freed";

  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaFree(dx);
  cudaFree(dy);
  cudaFree(dbig);
  cudaFree(dybig);
  cudaStreamDestroy(capture_stream);
  cudaStreamDestroy(other);
}

TEST(CudaLayerRuns, NonFiniteInputGivesNaNRows) {
  SVDQUANT_SKIP_WITHOUT_HOPPER();
  cudatest::LayerSpec s;
  s.N = 192;
  s.K = 512;
  s.R = 16;
  const LayerWeights w = cudatest::random_layer(s, 21);
  Tensor x = cudatest::random_input(9, s.K, s.dtype, false, 22);
  x.data_as<uint16_t>()[2 * s.K + 300] = f32_to_half(s.dtype, std::numeric_limits<float>::quiet_NaN());
  x.data_as<uint16_t>()[5 * s.K + 7] = f32_to_half(s.dtype, std::numeric_limits<float>::infinity());
  for (Accumulate acc : {Accumulate::FP32, Accumulate::HALF}) {
    const Tensor y = gpu_forward(w, x, acc);
    for (int64_t m = 0; m < 9; ++m)
      for (int64_t n = 0; n < s.N; ++n) {
        const double v = element_as_double(y, m * s.N + n);
        if (m == 2 || m == 5) {
          EXPECT_TRUE(std::isnan(v)) << m << "," << n;
        } else {
          EXPECT_TRUE(std::isfinite(v)) << m << "," << n;
        }
      }
    const Tensor r = cpu_forward(w, x, acc);
    EXPECT_EQ(cudatest::compare_ulp(y, r, s.dtype, cudatest::fp32_sum_tolerance(r, s.K)).beyond_tolerance, 0);
  }
}

TEST(CudaLayerRuns, BadInputIsRefusedWithTheTensorNamed) {
  SVDQUANT_SKIP_WITHOUT_HOPPER();
  cudatest::LayerSpec s;
  s.N = 128;
  s.K = 256;
  const LayerWeights w = cudatest::random_layer(s, 5);
  const Backend* b = cudatest::cuda_backend();
  auto layer = b->prepare(w, {});
  // Host tensors handed to the device forward.
  Tensor x = cudatest::random_input(4, s.K, s.dtype, false, 6);
  Tensor y = Tensor::zeros(x.dtype(), {4, s.N});
  try {
    b->forward(*layer, x, y, nullptr);
    FAIL() << "host tensors accepted";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("input x"), std::string::npos) << e.what();
  }
  // Wrong K and wrong dtype through forward_host.
  EXPECT_THROW(b->forward_host(*layer, cudatest::random_input(4, 192, s.dtype, false, 7)), FormatError);
  EXPECT_THROW(b->forward_host(*layer, cudatest::random_input(4, s.K, HalfKind::FP16, false, 7)), FormatError);
  // M = 0 gives an empty output.
  EXPECT_EQ(b->forward_host(*layer, Tensor::zeros(x.dtype(), {0, s.K})).numel(), 0);
}

}  // namespace

#endif  // SVDQUANT_HAVE_CUDA
