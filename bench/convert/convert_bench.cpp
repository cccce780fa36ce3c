// Throughput of the nunchaku <-> canonical conversion (docs/BENCHMARKS.md, "Convert").
// Generates a synthetic nunchaku int4 (or nvfp4) FLUX.1 checkpoint at real widths (hidden 3072,
// MLP 12288, rank 32) with the given number of double and single blocks in a scratch folder,
// then times convert nunchaku -> canonical and canonical -> nunchaku, checks that the round trip
// is byte-identical, and prints MB/s of checkpoint (tensor bytes of the input / wall time,
// including reading and writing the files). Nothing is left behind. Usage:
//   convert_bench [--blocks D S] [--nvfp4] [--dir <scratch folder>]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <unistd.h>
#include <vector>

#include "svdquant/nunchaku_convert.hpp"
#include "svdquant/safetensors.hpp"

using namespace svdquant;
namespace fs = std::filesystem;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Fast deterministic filler (xorshift64*), 16-bit values kept finite and positive.
struct Filler {
  uint64_t s;
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1DULL;
  }
  Tensor bytes(DType t, Shape shape) {
    Tensor x = Tensor::zeros(t, std::move(shape));
    auto* p = static_cast<uint8_t*>(x.data());
    size_t i = 0, n = x.nbytes();
    for (; i + 8 <= n; i += 8) {
      uint64_t v = next();
      std::memcpy(p + i, &v, 8);
    }
    for (; i < n; ++i) p[i] = uint8_t(next());
    if (t == DType::BF16)
      for (int64_t k = 0; k < x.numel(); ++k) x.data_as<uint16_t>()[k] = uint16_t(0x3C00 + (x.data_as<uint16_t>()[k] & 0x3FF));
    if (t == DType::F8_E4M3)
      for (int64_t k = 0; k < x.numel(); ++k) x.data_as<uint8_t>()[k] = uint8_t(0x20 + x.data_as<uint8_t>()[k] % 0x30);
    return x;
  }
};

}  // namespace

int main(int argc, char** argv) {
  int doubles = 2, singles = 4;
  bool fp4 = false;
  fs::path scratch = fs::temp_directory_path();
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--blocks" && i + 2 < argc) {
      doubles = std::atoi(argv[++i]);
      singles = std::atoi(argv[++i]);
    } else if (a == "--nvfp4") {
      fp4 = true;
    } else if (a == "--dir" && i + 1 < argc) {
      scratch = argv[++i];
    } else {
      std::fprintf(stderr, "usage: convert_bench [--blocks D S] [--nvfp4] [--dir <scratch folder>]\n");
      return 2;
    }
  }
  const int64_t h = 3072, mlp = 4 * h, R = 32;
  const fs::path dir = scratch / ("svdq_convert_bench_" + std::to_string(getpid()));
  fs::create_directories(dir);
  int rc = 0;
  try {
    Filler f{0x9E3779B97F4A7C15ULL};
    std::vector<std::pair<std::string, Tensor>> tensors;
    auto layer = [&](const std::string& p, int64_t N, int64_t K) {
      tensors.emplace_back(p + ".qweight", f.bytes(DType::I8, {N, K / 2}));
      if (fp4) {
        tensors.emplace_back(p + ".wscales", f.bytes(DType::F8_E4M3, {K / 16, N}));
        tensors.emplace_back(p + ".wtscale", f.bytes(DType::BF16, {1}));
      } else {
        tensors.emplace_back(p + ".wscales", f.bytes(DType::BF16, {K / 64, N}));
      }
      tensors.emplace_back(p + ".bias", f.bytes(DType::BF16, {N}));
      tensors.emplace_back(p + ".smooth", f.bytes(DType::BF16, {K}));
      tensors.emplace_back(p + ".smooth_orig", f.bytes(DType::BF16, {K}));
      tensors.emplace_back(p + ".lora_down", f.bytes(DType::BF16, {K, R}));
      tensors.emplace_back(p + ".lora_up", f.bytes(DType::BF16, {N, R}));
    };
    for (int b = 0; b < doubles; ++b) {
      const std::string p = "transformer_blocks." + std::to_string(b) + ".";
      for (const char* s : {"qkv_proj", "qkv_proj_context"}) layer(p + s, 3 * h, h);
      for (const char* s : {"out_proj", "out_proj_context"}) layer(p + s, h, h);
      for (const char* s : {"mlp_fc1", "mlp_context_fc1"}) layer(p + s, mlp, h);
      for (const char* s : {"mlp_fc2", "mlp_context_fc2"}) layer(p + s, h, mlp);
      tensors.emplace_back(p + "norm1.linear.weight", f.bytes(DType::BF16, {6 * h, h}));  // unquantized, carried over
    }
    for (int b = 0; b < singles; ++b) {
      const std::string p = "single_transformer_blocks." + std::to_string(b) + ".";
      layer(p + "qkv_proj", 3 * h, h);
      layer(p + "out_proj", h, h);
      layer(p + "mlp_fc1", mlp, h);
      layer(p + "mlp_fc2", h, mlp);
    }
    const nlohmann::json config = {{"_class_name", "FluxTransformer2DModel"}, {"num_attention_heads", 24}, {"attention_head_dim", 128}};
    const nlohmann::json q = {{"method", "svdquant"}, {"weight", {{"dtype", fp4 ? "fp4_e2m1_all" : "int4"}}}, {"rank", R}};
    const fs::path src = dir / "flux.safetensors", folder = dir / "canonical", back = dir / "back.safetensors";
    write_safetensors(src, tensors, {{"model_class", "NunchakuFluxTransformer2dModel"}, {"config", config.dump()}, {"quantization_config", q.dump()}});
    tensors.clear();
    const double mb = double(fs::file_size(src)) / 1e6;
    std::printf("synthetic nunchaku %s FLUX checkpoint: %d double + %d single blocks, %.0f MB\n", fp4 ? "nvfp4" : "int4", doubles, singles, mb);

    ConvertOptions opt;
    opt.progress = false;
    auto t0 = std::chrono::steady_clock::now();
    const ConvertReport r1 = convert_nunchaku_to_canonical(src, folder, opt);
    const double s1 = seconds_since(t0);
    t0 = std::chrono::steady_clock::now();
    const ConvertReport r2 = convert_canonical_to_nunchaku(folder, back, opt);
    const double s2 = seconds_since(t0);
    std::printf("nunchaku -> canonical: %zu layers, %.2f s, %.0f MB/s\n", r1.quantized_layers.size(), s1, double(r1.input_bytes) / 1e6 / s1);
    std::printf("canonical -> nunchaku: %zu layers, %.2f s, %.0f MB/s\n", r2.quantized_layers.size(), s2, double(r2.input_bytes) / 1e6 / s2);

    // The round trip must be exact, or the numbers mean nothing.
    const SafetensorsFile a = SafetensorsFile::open(src), b = SafetensorsFile::open(back);
    size_t checked = 0;
    for (const auto& n : a.names()) {
      const Tensor x = a.tensor(n), y = b.tensor(n);
      if (x.shape() != y.shape() || x.dtype() != y.dtype() || std::memcmp(x.data(), y.data(), x.nbytes()) != 0) {
        std::fprintf(stderr, "round trip differs at %s\n", n.c_str());
        rc = 1;
      }
      ++checked;
    }
    if (b.names().size() != checked) rc = 1;
    std::printf("round trip: %zu tensors %s\n", checked, rc == 0 ? "byte-identical" : "DIFFER");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "convert_bench: %s\n", e.what());
    rc = 1;
  }
  fs::remove_all(dir);
  return rc;
}
