// cuda_bench: whole-layer time of the cuda-sm90 backend (activation kernel + W4A4 GEMM + low-rank,
// through Backend::forward on device tensors) against cuBLAS BF16 and cuBLASLt FP8 (per-tensor
// scales, bf16 out) GEMMs of the same shape, in one run; plus the activation kernel alone in GB/s.
// Every measurement: warm-up, then >= 50 timed runs, each preceded by a write of a buffer of 4x
// the L2 size (no input is L2-resident when a run starts), CUDA events around the run, median.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "act_workspace.hpp"
#include "device_buffer.hpp"
#include "fp8_act.hpp"
#include "nvfp4_act_pack.hpp"
#include "nvfp4_kernels.hpp"
#include "nvfp4_pack.hpp"
#include "sm90_kernels.hpp"
#include "sm90_layout.hpp"
#include "sm90_pack.hpp"
#include "svdquant/backend.hpp"
#include "svdquant/float_formats.hpp"

using namespace svdquant;

namespace {

void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}
void ckb(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "%s: cublas status %d\n", what, int(s));
    std::exit(1);
  }
}

// --profile (for ncu): one shape, one warm-up and one timed run of everything.
int kIters = 60, kWarmup = 5;

struct Timer {
  cudaStream_t stream;
  cuda::DeviceBuffer flush;
  cudaEvent_t a, b;
  explicit Timer(cudaStream_t s) : stream(s) {
    int l2 = 0;
    ck(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0), "L2 size");
    flush.resize(size_t(l2) * 4);
    ck(cudaEventCreate(&a), "event");
    ck(cudaEventCreate(&b), "event");
  }
  // Median milliseconds of fn() over kIters runs, each after an L2-evicting write.
  double median_ms(const std::function<void()>& fn) {
    for (int i = 0; i < kWarmup; ++i) fn();
    std::vector<float> t;
    for (int i = 0; i < kIters; ++i) {
      ck(cudaMemsetAsync(flush.get(), i & 0xFF, flush.size(), stream), "flush");
      ck(cudaEventRecord(a, stream), "record");
      fn();
      ck(cudaEventRecord(b, stream), "record");
      ck(cudaEventSynchronize(b), "sync");
      float ms = 0;
      ck(cudaEventElapsedTime(&ms, a, b), "elapsed");
      t.push_back(ms);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }
};

std::vector<uint16_t> random_bf16(size_t n, float scale, std::mt19937_64& rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<uint16_t> v(n);
  for (auto& x : v) x = f32_to_bf16(d(rng) * scale);
  return v;
}

Tensor host_bf16(Shape s, float scale, std::mt19937_64& rng) {
  Tensor t = Tensor::zeros(DType::BF16, s);
  const auto v = random_bf16(size_t(t.numel()), scale, rng);
  std::copy(v.begin(), v.end(), t.data_as<uint16_t>());
  return t;
}

LayerWeights random_layer(int64_t N, int64_t K, int64_t R, std::mt19937_64& rng) {
  LayerWeights w;
  w.prefix = "bench";
  w.qweight = Tensor::zeros(DType::I8, {N, K / 2});
  auto* q = w.qweight.data_as<uint8_t>();
  for (int64_t i = 0; i < w.qweight.numel(); i += 8) {
    const uint64_t r = rng();
    for (int j = 0; j < 8 && i + j < w.qweight.numel(); ++j) q[i + j] = uint8_t(r >> (8 * j));
  }
  w.wscales = host_bf16({K / 64, N}, 0.01f, rng);
  for (int64_t i = 0; i < w.wscales.numel(); ++i) w.wscales.data_as<uint16_t>()[i] &= 0x7FFF;  // positive
  w.smooth = Tensor::zeros(DType::BF16, {K});
  for (int64_t i = 0; i < K; ++i) w.smooth.data_as<uint16_t>()[i] = f32_to_bf16(1.0f + float(i % 7) * 0.1f);
  w.proj_down = host_bf16({K, R}, 0.05f, rng);
  w.proj_up = host_bf16({N, R}, 0.05f, rng);
  w.bias = host_bf16({N}, 1.0f, rng);
  w.validate(Precision::INT4, false);
  return w;
}

// The single-pass fp8 activation kernel (fp8_act.cu) under the plan launch_act_quant picks and
// under every forced plan of rows per block x chunks that fits. One line per shape, µs.
void sweep_fp8_act_plans(const cuda::ActQuantParams& base, Timer& timer, cudaStream_t stream) {
  cuda::ActQuantParams p = base;
  p.fp8 = true;
  int sms = 0;
  ck(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), "SMs");
  const cuda::Fp8ActPlan planned = cuda::fp8_act_plan(p.M, p.K, p.Rpad, 0, sms);
  // Every plan of rows per block x chunks that fits and can be scheduled.
  auto each_plan = [&](auto fn) {
    for (int rows : {16, 32, 64})
      for (int c = 1; c <= cuda::kFp8MaxCluster; ++c) {
        const cuda::Fp8ActPlan pl = cuda::fp8_act_make_plan(rows, c, p.K, p.Rpad, false);
        if (pl.rows != 0 && pl.cluster == c && cuda::fp8_act_schedulable(p, pl)) fn(pl);
      }
  };
  std::printf("M=%lld K=%lld fp8 activation plans (us): planned %dr x %dc: %.1f |", (long long)p.M, (long long)p.K, planned.rows,
              planned.cluster, timer.median_ms([&] { cuda::launch_fp8_act(p, planned, stream); }) * 1e3);
  each_plan([&](const cuda::Fp8ActPlan& pl) {
    std::printf(" %dr x %dc %.1f |", pl.rows, pl.cluster, timer.median_ms([&] { cuda::launch_fp8_act(p, pl, stream); }) * 1e3);
  });
  std::printf("\n");
  // The copies' granularity: each plan with 1, 2 and 4 column stages (one bulk copy per row and
  // stage: fewer stages, larger copies), the whole kernel and its copies alone (profiling variant 7).
  if (p.M >= 4096) {
    std::printf("M=%lld K=%lld fp8 activation plans by stages (us, full / copies only):", (long long)p.M, (long long)p.K);
    each_plan([&](cuda::Fp8ActPlan pl) {
      for (int stages : {1, 2, 4}) {
        if (stages > pl.groups) continue;
        pl.stages = stages;
        pl.profile = 0;
        const double full = timer.median_ms([&] { cuda::launch_fp8_act(p, pl, stream); });
        pl.profile = cuda::kProfileCopiesOnly;
        const double copies = timer.median_ms([&] { cuda::launch_fp8_act(p, pl, stream); });
        std::printf(" %dr x %dc x %ds (%d B) %.1f / %.1f |", pl.rows, pl.cluster, stages, (pl.groups + stages - 1) / stages * 128,
                    full * 1e3, copies * 1e3);
      }
    });
    std::printf("\n");
  }
  // The same bytes of x moved by the copy engine under the same timer (L2 evicted, dirty, before
  // each run): x read and written once (2 M K 2 bytes), against the kernel's x read + codes written.
  {
    cuda::DeviceBuffer xcopy(size_t(p.M * p.K * 2));
    const double t = timer.median_ms(
        [&] { ck(cudaMemcpyAsync(xcopy.get(), p.x, xcopy.size(), cudaMemcpyDeviceToDevice, stream), "x copy"); });
    std::printf("M=%lld K=%lld: x copied device to device (%.1f MB read + written): %.1f us\n", (long long)p.M, (long long)p.K,
                double(xcopy.size()) / 1e6, t * 1e3);
  }
  // Where the planned launch's time goes (fp8_act.hpp's profiling variants; outputs wrong).
  std::printf("M=%lld K=%lld fp8 activations, planned %dr x %dc, profiling variants (us):", (long long)p.M, (long long)p.K,
              planned.rows, planned.cluster);
  const char* names[8] = {"full", "no pass 1", "no exchange", "copies and codes only", "no codes", "exchange only",
                          "pass 1 only", "copies only"};
  for (int v = 0; v < 8; ++v) {
    cuda::Fp8ActPlan pl = planned;
    pl.profile = v;
    std::printf(" %s %.1f |", names[v], timer.median_ms([&] { cuda::launch_fp8_act(p, pl, stream); }) * 1e3);
  }
  std::printf("\n");
}

struct Row {
  int64_t M, K, N;
  double ours_fp32, ours_half, ours_fp8, ours_nv, act, act8, bf16, fp8;
};

}  // namespace

int main(int argc, char** argv) {
  const bool profile = argc > 1 && std::string(argv[1]) == "--profile";
  if (profile) kIters = kWarmup = 1;
  const Backend* be = BackendRegistry::instance().find("cuda-sm90");
  if (!be) {
    std::printf("cuda_bench: built without the cuda-sm90 backend\n");
    return 0;
  }
  LayerDesc probe;
  probe.N = probe.K = 3072;
  probe.R = 32;
  if (auto why = be->unsupported_reason(probe, {})) {
    std::printf("cuda_bench: skipped: %s\n", why->c_str());
    return 0;
  }
  cudaDeviceProp prop{};
  ck(cudaGetDeviceProperties(&prop, 0), "props");
  cudaStream_t stream;
  ck(cudaStreamCreate(&stream), "stream");
  Timer timer(stream);
  cublasHandle_t cublas;
  cublasLtHandle_t lt;
  ckb(cublasCreate(&cublas), "cublasCreate");
  ckb(cublasSetStream(cublas, stream), "cublasSetStream");
  ckb(cublasLtCreate(&lt), "cublasLtCreate");
  cuda::DeviceBuffer lt_ws(size_t(64) << 20);

  // Device copy bandwidth (bytes read + written), the activation kernel's ceiling.
  double copy_gbs = 0;
  {
    const size_t bytes = size_t(1) << 30;
    cuda::DeviceBuffer src(bytes), dst(bytes);
    ck(cudaMemset(src.get(), 1, bytes), "memset");
    const double ms = timer.median_ms([&] { ck(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice, stream), "copy"); });
    copy_gbs = 2.0 * double(bytes) / (ms * 1e6);
  }
  std::printf("device: %s, %d SMs, L2 %d MB; device-to-device copy %.0f GB/s (read + write)\n", prop.name,
              prop.multiProcessorCount, prop.l2CacheSize >> 20, copy_gbs);

  const int64_t R = 32;
  std::vector<std::pair<int64_t, int64_t>> shapes = {{3072, 3072}, {3072, 12288}, {12288, 3072}, {3072, 21504}};
  std::vector<int64_t> Ms = {256, 1024, 4608};
  // --profile runs M = 4608 unless SVDQ_PROFILE_M names another M.
  const char* pm = std::getenv("SVDQ_PROFILE_M");
  const int64_t profile_m = pm && *pm ? std::atoll(pm) : 4608;
  if (profile && profile_m < 1) {
    std::fprintf(stderr, "cuda_bench: SVDQ_PROFILE_M must be a positive row count, got '%s'\n", pm);
    return 1;
  }
  if (profile) {
    shapes.resize(1);
    Ms = {profile_m};
  }
  std::mt19937_64 rng(2024);
  std::vector<Row> rows;
  for (auto [K, N] : shapes) {
    const LayerWeights w = random_layer(N, K, R, rng);
    ForwardOptions f32opt, halfopt, fp8opt;
    f32opt.activations = halfopt.activations = Activations::CHECKPOINT;  // not auto: the 4-bit modes
    halfopt.accumulate = Accumulate::HALF;
    fp8opt.activations = Activations::FP8;
    auto layer32 = be->prepare(w, f32opt);
    auto layerh = be->prepare(w, halfopt);
    auto layer8 = be->prepare(w, fp8opt);
    // The same codes read as an nvfp4 layer (e2m1 codes, e4m3 group scales of 16, alpha).
    LayerWeights w4 = w;
    w4.wscales = Tensor::zeros(DType::F8_E4M3, {K / 16, N});
    for (int64_t i = 0; i < w4.wscales.numel(); ++i) w4.wscales.data_as<uint8_t>()[i] = uint8_t(0x20 + rng() % 0x20);
    w4.wtscale = Tensor::zeros(DType::F32, {1});
    w4.wtscale.data_as<float>()[0] = 0.25f;
    w4.validate(Precision::NVFP4, false);
    auto layer4 = be->prepare(w4, ForwardOptions{});
    const int64_t Mmax = Ms.back();
    // Inputs: x for us (bf16), x and W for cuBLAS BF16, e4m3 copies for cuBLASLt FP8.
    cuda::DeviceBuffer x(size_t(Mmax * K * 2)), y(size_t(Mmax * N * 2)), wb(size_t(N * K * 2)), x8(size_t(Mmax * K)),
        w8(size_t(N * K)), scales(512);
    {
      const auto hx = random_bf16(size_t(Mmax * K), 1.0f, rng);
      ck(cudaMemcpy(x.get(), hx.data(), x.size(), cudaMemcpyHostToDevice), "x");
      const auto hw = random_bf16(size_t(N * K), 0.02f, rng);
      ck(cudaMemcpy(wb.get(), hw.data(), wb.size(), cudaMemcpyHostToDevice), "w");
      std::vector<uint8_t> h8(size_t(std::max(Mmax * K, N * K)));
      for (auto& b : h8) b = uint8_t(rng() & 0x77);  // finite e4m3 values
      ck(cudaMemcpy(x8.get(), h8.data(), x8.size(), cudaMemcpyHostToDevice), "x8");
      ck(cudaMemcpy(w8.get(), h8.data(), w8.size(), cudaMemcpyHostToDevice), "w8");
      const float s[2] = {0.5f, 0.25f};  // one scale per operand, 256 bytes apart
      ck(cudaMemcpy(scales.get(), &s[0], 4, cudaMemcpyHostToDevice), "scales");
      ck(cudaMemcpy(scales.as<uint8_t>() + 256, &s[1], 4, cudaMemcpyHostToDevice), "scales");
    }
    // Activation kernel alone, with its own workspace.
    const int64_t Mtmax = cuda::ceil_div(Mmax, cuda::kTileM);
    cuda::ActWorkspace aws(Mtmax * cuda::kTileM, K, int(cuda::padded_rank(R)), true);
    cuda::DeviceBuffer smooth, smooth_rcp, pd;
    smooth.upload(w.smooth.data(), w.smooth.nbytes());
    {
      const auto rcp = cuda::pack_smooth_reciprocal(w.smooth, K);
      smooth_rcp.upload(rcp.data(), rcp.size() * 4);
    }
    const auto frag = cuda::pack_proj_down(w.proj_down, K, R, cuda::padded_rank(R));
    pd.upload(frag.data(), frag.size() * 4);

    for (int64_t M : Ms) {
      Row row{M, K, N, 0, 0, 0, 0, 0, 0, 0, 0};
      std::fprintf(stderr, "cuda_bench: M=%lld K=%lld N=%lld\n", (long long)M, (long long)K, (long long)N);
      const Device dev{DeviceType::CUDA, 0};
      const Tensor tx = Tensor::wrap(x.get(), DType::BF16, {M, K}, dev);
      Tensor ty = Tensor::wrap(y.get(), DType::BF16, {M, N}, dev);
      row.ours_fp32 = timer.median_ms([&] { be->forward(*layer32, tx, ty, stream); });
      row.ours_half = timer.median_ms([&] { be->forward(*layerh, tx, ty, stream); });
      row.ours_fp8 = timer.median_ms([&] { be->forward(*layer8, tx, ty, stream); });
      row.ours_nv = timer.median_ms([&] { be->forward(*layer4, tx, ty, stream); });
      cuda::ActQuantParams ap;
      aws.fill(ap);
      ap.x = x.as<uint16_t>();
      ap.smooth = smooth.as<uint16_t>();
      ap.smooth_rcp = smooth_rcp.as<float>();
      ap.pdfrag = pd.as<uint32_t>();
      ap.scale_f32 = true;
      ap.M = M;
      ap.K = K;
      ap.Rpad = int(cuda::padded_rank(R));
      row.act = timer.median_ms([&] { cuda::launch_act_quant(ap, stream); });
      ap.fp8 = true;  // both passes of §5
      row.act8 = timer.median_ms([&] { cuda::launch_act_quant(ap, stream); });
      if (N == 3072 && (M == 256 || M == 4608)) sweep_fp8_act_plans(ap, timer, stream);

      const float one = 1.0f, zero = 0.0f;
      row.bf16 = timer.median_ms([&] {
        ckb(cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(M), int(K), &one, wb.get(), CUDA_R_16BF, int(K),
                         x.get(), CUDA_R_16BF, int(K), &zero, y.get(), CUDA_R_16BF, int(N), CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT),
            "cublasGemmEx");
      });

      // cuBLASLt FP8: D[N, M] (column-major) = W^T x with per-tensor scales, bf16 out.
      cublasLtMatmulDesc_t op;
      ckb(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc");
      const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
      ckb(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)), "transa");
      ckb(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)), "transb");
      const void* sa = scales.as<float>();
      const void* sb = scales.as<uint8_t>() + 256;
      ckb(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa, sizeof(sa)), "ascale");
      ckb(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb, sizeof(sb)), "bscale");
      cublasLtMatrixLayout_t la, lb, lc;
      ckb(cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, uint64_t(K), uint64_t(N), K), "la");
      ckb(cublasLtMatrixLayoutCreate(&lb, CUDA_R_8F_E4M3, uint64_t(K), uint64_t(M), K), "lb");
      ckb(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, uint64_t(N), uint64_t(M), N), "lc");
      cublasLtMatmulPreference_t pref;
      ckb(cublasLtMatmulPreferenceCreate(&pref), "pref");
      const size_t wsb = lt_ws.size();
      ckb(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof(wsb)), "pref ws");
      cublasLtMatmulHeuristicResult_t heur[8] = {};
      int found = 0;
      ckb(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 8, heur, &found), "heuristic");
      // The first algorithm that runs (cuBLASLt may return ones it then refuses); timed alone.
      int usable = -1;
      cublasStatus_t last = CUBLAS_STATUS_NOT_SUPPORTED;
      for (int i = 0; i < found && usable < 0; ++i) {
        last = cublasLtMatmul(lt, op, &one, w8.get(), la, x8.get(), lb, &zero, y.get(), lc, y.get(), lc, &heur[i].algo,
                              lt_ws.get(), wsb, stream);
        if (last == CUBLAS_STATUS_SUCCESS) usable = i;
      }
      if (usable >= 0) {
        row.fp8 = timer.median_ms([&] {
          ckb(cublasLtMatmul(lt, op, &one, w8.get(), la, x8.get(), lb, &zero, y.get(), lc, y.get(), lc, &heur[usable].algo,
                             lt_ws.get(), wsb, stream),
              "cublasLtMatmul");
        });
      } else {
        std::printf("cuBLASLt FP8 M=%lld K=%lld N=%lld: %d algorithms, none ran (status %d)\n", (long long)M,
                    (long long)K, (long long)N, found, int(last));
      }
      cublasLtMatmulPreferenceDestroy(pref);
      cublasLtMatrixLayoutDestroy(la);
      cublasLtMatrixLayoutDestroy(lb);
      cublasLtMatrixLayoutDestroy(lc);
      cublasLtMatmulDescDestroy(op);
      rows.push_back(row);
      std::fflush(stdout);
    }
  }

  std::printf("\nmedian of %d runs after %d warm-up, L2 evicted before each run; times in microseconds; "
              "TOPS = 2MNK / time; ratios = baseline time / our whole-layer time; int4 = 4-bit (checkpoint) "
              "activations, fp8 = fp8 activations (NUMERICS.md §5)\n\n",
              kIters, kWarmup);
  std::printf("| M | K | N | int4 fp32 us | int4 half us | fp8 us | act us | act GB/s | act %% copy | fp8 act us | BF16 us | FP8 us | "
              "fp8 TOPS | int4 fp32 vs BF16 | int4 half vs BF16 | fp8 vs BF16 | fp8 vs FP8 | nvfp4 us | nvfp4 vs BF16 |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const Row& r : rows) {
    const double flops = 2.0 * double(r.M) * double(r.N) * double(r.K);
    const double act_bytes = double(r.M) * double(r.K) * (2 + 1) + double(r.M) * double(r.K / 64) * 4 + double(r.M) * R * 4;
    const double act_gbs = act_bytes / (r.act * 1e6);
    std::printf("| %lld | %lld | %lld | %.1f | %.1f | %.1f | %.1f | %.0f | %.0f%% | %.1f | %.1f | %.1f | %.0f | %.2fx | %.2fx | %.2fx | %.2fx | %.1f | %.2fx |\n",
                (long long)r.M, (long long)r.K, (long long)r.N, r.ours_fp32 * 1e3, r.ours_half * 1e3, r.ours_fp8 * 1e3,
                r.act * 1e3, act_gbs, 100.0 * act_gbs / copy_gbs, r.act8 * 1e3, r.bf16 * 1e3, r.fp8 * 1e3, flops / (r.ours_fp8 * 1e9),
                r.bf16 / r.ours_fp32, r.bf16 / r.ours_half, r.bf16 / r.ours_fp8, r.fp8 > 0 ? r.fp8 / r.ours_fp8 : 0.0, r.ours_nv * 1e3, r.bf16 / r.ours_nv);
  }
  // nvfp4 breakdown (K = N = 3072): each kernel of Nvfp4Layer::forward alone, on random codes and
  // scales (timing only).
  {
    const int64_t K = 3072, N = 3072, Rp = cuda::nv_padded_rank(R);
    const int64_t Kp = cuda::nv_round_up(K, cuda::kNvTileK), Np = cuda::nv_round_up(N, cuda::kNvTileN);
    std::printf("\nnvfp4 kernels alone, K = N = 3072 (us)\n");
    for (int64_t M : profile ? std::vector<int64_t>{profile_m} : std::vector<int64_t>{256, 4608}) {
      const int64_t Mp = cuda::nv_round_up(M, cuda::kNvTileM);
      cuda::DeviceBuffer x(size_t(M * K * 2)), y(size_t(M * N * 2)), smooth, rcp, act(size_t(Mp * Kp * 2)),
          lact(size_t(Mp * Rp * 4)), wpack, pdn, pup, wc, bias, partial, tickets;
      {
        const auto hx = random_bf16(size_t(M * K), 1.0f, rng);
        ck(cudaMemcpy(x.get(), hx.data(), x.size(), cudaMemcpyHostToDevice), "x");
        Tensor sm = Tensor::zeros(DType::BF16, {K});
        for (int64_t k = 0; k < K; ++k) sm.data_as<uint16_t>()[k] = f32_to_bf16(1.25f);
        smooth.upload(sm.data(), sm.nbytes());
        const auto r = cuda::pack_nv_smooth_reciprocal(sm, K);
        rcp.upload(r.data(), r.size() * 4);
        Tensor q = Tensor::zeros(DType::U8, {N, K / 2}), sc = Tensor::zeros(DType::F8_E4M3, {K / 16, N});
        for (int64_t i = 0; i < q.numel(); ++i) q.data_as<uint8_t>()[i] = uint8_t(rng());
        for (int64_t i = 0; i < sc.numel(); ++i) sc.data_as<uint8_t>()[i] = uint8_t(0x20 + rng() % 0x20);
        const auto packed = cuda::pack_nvfp4_weights(q, sc, N, K);
        wpack.upload(packed.data(), packed.size());
        Tensor pd = Tensor::zeros(DType::BF16, {K, R});
        for (int64_t i = 0; i < pd.numel(); ++i) pd.data_as<uint16_t>()[i] = f32_to_bf16(0.01f);
        const auto d = cuda::pack_nv_proj_down(pd, K, R, Rp);
        const std::vector<float> u(size_t(Np * Rp), 0.01f), one(size_t(Np), 1.0f);
        pdn.upload(d.data(), d.size() * 4);
        pup.upload(u.data(), u.size() * 4);
        wc.upload(one.data(), one.size() * 4);
        bias.upload(one.data(), one.size() * 4);
        ck(cudaMemset(act.get(), 0, act.size()), "act");
      }
      cuda::Nvfp4ActParams a;  // act and lact in one kernel (a0: the same without the low-rank branch)
      a.x = x.as<uint16_t>();
      a.smooth = smooth.as<uint16_t>();
      a.smooth_rcp = rcp.as<float>();
      a.pdfrag = pdn.as<uint32_t>();
      a.act = act.as<uint16_t>();
      a.lact = lact.as<float>();
      a.M = M;
      a.K = K;
      a.Kpad = Kp;
      a.R = int(R);
      a.Rpad = int(Rp);
      cuda::Nvfp4ActParams a0 = a;
      a0.R = a0.Rpad = 0;
      cuda::Nvfp4GemmParams g;
      g.act = act.as<uint16_t>();
      g.wpack = wpack.as<uint8_t>();
      g.lact = lact.as<float>();
      g.proj_up = pup.as<float>();
      g.wcscales = wc.as<float>();
      g.bias = bias.as<float>();
      g.y = y.as<uint16_t>();
      g.M = M;
      g.N = N;
      g.Kpad = Kp;
      g.Rpad = int(Rp);
      g.alpha = 0.25f;
      const cuda::Nvfp4Split sp = cuda::nvfp4_gemm_splits(M, N, Kp, prop.multiProcessorCount);
      g.splits = sp.splits;
      g.k_steps_per_split = sp.k_steps_per_split;
      g.full_tiles = sp.full_tiles;
      if (sp.splits > 1) {
        partial.resize(sp.partial_bytes);
        tickets.resize(sp.ticket_bytes);
        ck(cudaMemset(tickets.get(), 0, tickets.size()), "tickets");
        g.partial = partial.as<float>();
        g.tickets = tickets.as<uint32_t>();
      }
      const double ta = timer.median_ms([&] { cuda::launch_nvfp4_act(a, stream); });
      const double ta0 = timer.median_ms([&] { cuda::launch_nvfp4_act(a0, stream); });
      const double tg = timer.median_ms([&] { cuda::launch_nvfp4_gemm(g, stream); });
      // The GEMM without its low-rank epilogue, and unsplit.
      g.Rpad = 0;
      const double tg_nolr = timer.median_ms([&] { cuda::launch_nvfp4_gemm(g, stream); });
      g.Rpad = int(Rp);
      g.splits = 1;
      g.k_steps_per_split = int(Kp / cuda::kNvTileK);
      const double tg_one = timer.median_ms([&] { cuda::launch_nvfp4_gemm(g, stream); });
      std::printf("M=%lld nvfp4: activations + low-rank down %.1f (without low-rank %.1f) | GEMM %.1f (%.0f TOPS, %d splits; "
                  "without low-rank %.1f; unsplit %.1f)\n",
                  (long long)M, ta * 1e3, ta0 * 1e3, tg * 1e3, 2.0 * double(M) * double(N) * double(K) / (tg * 1e9), sp.splits,
                  tg_nolr * 1e3, tg_one * 1e3);
      std::fflush(stdout);
    }
  }
  // GEMM breakdown (K = N = 3072): the GEMM kernel alone in fp32 and fp8 mode, then with parts
  // left out (GemmParams::profile_skip), to see which part sets the time.
  {
    const int64_t K = 3072, N = 3072, G = K / 64, Nt = cuda::weight_tiles(N);
    const LayerWeights w = random_layer(N, K, R, rng);
    cuda::DeviceBuffer wfrag, wscale, wc, bias, pu, smooth, smooth_rcp, pd;
    const auto frag = cuda::pack_weight_fragments(w.qweight, N, K);
    wfrag.upload(frag.data(), frag.size());
    std::vector<float> ws(size_t(Nt * G * 128), 0.0f);
    for (int64_t nt = 0; nt < Nt; ++nt)
      for (int64_t g = 0; g < G; ++g)
        for (int r = 0; r < 128; ++r)
          ws[size_t((nt * G + g) * 128 + r)] = bf16_to_f32(w.wscales.data_as<uint16_t>()[g * N + nt * 128 + r]);
    wscale.upload(ws.data(), ws.size() * 4);
    std::vector<float> ones(size_t(Nt * 128), 1.0f), zeros(size_t(Nt * 128 * R), 0.0f);
    wc.upload(ones.data(), ones.size() * 4);
    bias.upload(zeros.data(), size_t(Nt * 128) * 4);
    pu.upload(zeros.data(), zeros.size() * 4);
    smooth.upload(w.smooth.data(), w.smooth.nbytes());
    {
      const auto rcp = cuda::pack_smooth_reciprocal(w.smooth, K);
      smooth_rcp.upload(rcp.data(), rcp.size() * 4);
    }
    const auto pdf = cuda::pack_proj_down(w.proj_down, K, R, R);
    pd.upload(pdf.data(), pdf.size() * 4);
    std::printf("\nGEMM kernel alone, K = N = 3072 (us): profiling variants in fp32 and fp8 mode, "
                "then each cluster size (1, 2 or 4 CTAs) in each mode\n");
    for (int64_t M : profile ? std::vector<int64_t>{profile_m} : std::vector<int64_t>{256, 4608}) {
      const int64_t Mt = cuda::ceil_div(M, 128);
      cuda::DeviceBuffer x(size_t(M * K * 2)), y(size_t(M * N * 2));
      cuda::ActWorkspace aws(M, K, int(R), false);
      const auto hx = random_bf16(size_t(M * K), 1.0f, rng);
      ck(cudaMemcpy(x.get(), hx.data(), x.size(), cudaMemcpyHostToDevice), "x");
      cuda::ActQuantParams ap;
      aws.fill(ap);
      ap.x = x.as<uint16_t>();
      ap.smooth = smooth.as<uint16_t>();
      ap.smooth_rcp = smooth_rcp.as<float>();
      ap.pdfrag = pd.as<uint32_t>();
      ap.scale_f32 = true;
      ap.M = M;
      ap.K = K;
      ap.Rpad = int(R);
      cuda::launch_act_quant(ap, stream);
      cuda::GemmParams gp;
      gp.codes = ap.codes;
      gp.ascale = ap.ascale;
      gp.lact = ap.lact;
      gp.wfrag = wfrag.as<uint8_t>();
      gp.wscale = wscale.get();
      gp.wcscales = wc.as<float>();
      gp.bias = bias.as<float>();
      gp.proj_up = pu.as<float>();
      gp.y = y.as<uint16_t>();
      gp.M = M;
      gp.N = N;
      gp.K = K;
      gp.Rpad = int(R);
      cuda::DeviceBuffer rs(size_t(Mt * 128 * 4));
      {
        const std::vector<float> one(size_t(Mt * 128), 1.0f / 448.0f);
        rs.upload(one.data(), one.size() * 4);
      }
      gp.row_scale = rs.as<float>();
      std::fprintf(stderr, "cuda_bench: breakdown M=%lld\n", (long long)M);
      // Variants (GemmParams::profile_skip) with clusters of 1 and 2: full, no fold, no loads, no
      // fold + no loads, A from smem, waits only (consumers wait for and release the stages; the
      // epilogue still runs: variant 43 below is the delivery alone).
      const int variants[6] = {0, 1, 4, 5, 8, 11};
      const double flop = 2.0 * double(M) * double(N) * double(K);
      auto mode_name = [](cuda::GemmMode m) { return m == cuda::GemmMode::FP8 ? "fp8" : m == cuda::GemmMode::HALF ? "half" : "fp32"; };
      for (int cluster : {1, 2}) {
        gp.cluster = cluster;
        for (const cuda::GemmMode mode : {cuda::GemmMode::FP32, cuda::GemmMode::FP8}) {
          gp.mode = mode;
          double t[6];
          for (int v = 0; v < 6; ++v) {
            gp.profile_skip = variants[v];
            t[v] = timer.median_ms([&] { cuda::launch_w4a4_gemm(gp, stream); });
          }
          gp.profile_skip = 0;
          std::printf("M=%lld %s, cluster %d: full %.1f | no fold %.1f | no loads %.1f | no fold, no loads %.1f | "
                      "A from smem %.1f | waits only, with epilogue %.1f\n",
                      (long long)M, mode_name(mode), cluster, t[0] * 1e3, t[1] * 1e3, t[2] * 1e3,
                      t[3] * 1e3, t[4] * 1e3, t[5] * 1e3);
        }
      }
      // Every cluster size in each mode (HALF reads the T scales it expects from the same buffers
      // reinterpreted: timing only, values wrong).
      const int clusters[3] = {1, 2, 4};
      for (const cuda::GemmMode mode : {cuda::GemmMode::FP32, cuda::GemmMode::HALF, cuda::GemmMode::FP8}) {
        gp.mode = mode;
        double t[3];
        for (int c = 0; c < 3; ++c) {
          gp.cluster = clusters[c];
          t[c] = timer.median_ms([&] { cuda::launch_w4a4_gemm(gp, stream); });
        }
        const double best = *std::min_element(t, t + 3);
        std::printf("M=%lld %s: cluster 1 %.1f | 2 %.1f | 4 %.1f  (best %.0f TOPS)\n", (long long)M, mode_name(mode),
                    t[0] * 1e3, t[1] * 1e3, t[2] * 1e3, flop / (best * 1e9));
      }
      // The weights expanded to e4m3 once per call (launch_expand_weights) and read by the GEMM
      // from shared memory (GemmParams::wexp): the expansion alone, then the GEMM in each mode
      // and its delivery alone.
      {
        cuda::DeviceBuffer wexp(size_t(Nt * G) * cuda::kCodeTileBytes);
        const double tx = timer.median_ms([&] { cuda::launch_expand_weights(gp.wfrag, wexp.as<uint8_t>(), Nt, G, stream); });
        gp.wexp = wexp.as<uint8_t>();
        gp.cluster = 1;
        double t[4];
        int v = 0;
        for (const cuda::GemmMode mode : {cuda::GemmMode::FP32, cuda::GemmMode::HALF, cuda::GemmMode::FP8}) {
          gp.mode = mode;
          t[v++] = timer.median_ms([&] { cuda::launch_w4a4_gemm(gp, stream); });
        }
        gp.profile_skip = 11;
        t[3] = timer.median_ms([&] { cuda::launch_w4a4_gemm(gp, stream); });
        gp.profile_skip = 32;
        const double noepi = timer.median_ms([&] { cuda::launch_w4a4_gemm(gp, stream); });
        gp.profile_skip = 43;
        const double deliv = timer.median_ms([&] { cuda::launch_w4a4_gemm(gp, stream); });
        gp.profile_skip = 64;
        const double nostore = timer.median_ms([&] { cuda::launch_w4a4_gemm(gp, stream); });
        gp.profile_skip = 128;
        const double nostage = timer.median_ms([&] { cuda::launch_w4a4_gemm(gp, stream); });
        gp.Rpad = 0;
        const double nolr = timer.median_ms([&] { cuda::launch_w4a4_gemm(gp, stream); });
        gp.Rpad = int(R);
        gp.profile_skip = 0;
        gp.wexp = nullptr;
        std::printf("M=%lld e4m3 weights: expansion %.1f | GEMM fp32 %.1f | half %.1f | fp8 %.1f | waits only, with epilogue (fp8) %.1f "
                    "| fp8 without epilogue %.1f | without stores %.1f | without staging and stores %.1f | that and R = 0 %.1f "
                    "| delivery alone, no epilogue %.1f\n",
                    (long long)M, tx * 1e3, t[0] * 1e3, t[1] * 1e3, t[2] * 1e3, t[3] * 1e3, noepi * 1e3, nostore * 1e3,
                    nostage * 1e3, nolr * 1e3, deliv * 1e3);
      }
      gp.mode = cuda::GemmMode::FP32;
      gp.cluster = 0;
      gp.Rpad = 0;
      const double nolora = timer.median_ms([&] { cuda::launch_w4a4_gemm(gp, stream); });
      gp.Rpad = int(R);
      std::printf("M=%lld fp32, automatic configuration, without the low-rank branch: %.1f\n", (long long)M, nolora * 1e3);
    }
  }
  cublasDestroy(cublas);
  cublasLtDestroy(lt);
  cudaStreamDestroy(stream);
  return 0;
}
