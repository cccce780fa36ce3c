// Builds nunchaku-format single files for the convert tests: layers copied from the fixtures (their
// nunchaku.* tensors, byte for byte) or packed from random canonical layers at padded shapes, plus
// unquantized tensors and an AWQ W4A16 layer, with nunchaku's metadata.
#pragma once
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "svdquant/layout_canonical.hpp"
#include "svdquant/layout_nunchaku.hpp"
#include "svdquant/safetensors.hpp"
#include "test_util.hpp"

namespace svdquant::testing {

struct NunchakuFileBuilder {
  std::string model_class = "NunchakuFluxTransformer2dModel";
  nlohmann::json config = nlohmann::json::object();
  std::string precision = "int4";  // quantization_config weight dtype spelling: "int4" | "fp4_e2m1_all" | anything
  bool lora_style = true;           // lora_down/lora_up/smooth/smooth_orig vs proj_down/proj_up/smooth_factor/...
  int rank = 0;                     // recorded in quantization_config when nonzero (nunchaku's loaders assume 32)
  std::vector<std::pair<std::string, Tensor>> tensors;

  std::string spell(const std::string& canon) const {
    if (!lora_style) {
      if (canon == "smooth") return "smooth_factor";
      if (canon == "smooth_orig") return "smooth_factor_orig";
      if (canon == "lora_down") return "proj_down";
      if (canon == "lora_up") return "proj_up";
    }
    return canon;
  }

  // Copies the nunchaku.* tensors of a fixture under `prefix`.
  void add_fixture_layer(const std::string& prefix, const std::string& fixture) {
    const SafetensorsFile f = SafetensorsFile::open(fixture_path(fixture));
    for (const char* n : {"qweight", "wscales", "bias", "smooth", "smooth_orig", "lora_down", "lora_up", "wtscale"})
      if (f.contains(std::string("nunchaku.") + n)) tensors.emplace_back(prefix + "." + spell(n), f.tensor(std::string("nunchaku.") + n).clone());
  }

  // Packs a canonical layer (tensors as in the fixtures' canonical.*) with nunchaku's padding.
  void add_packed_layer(const std::string& prefix, const std::map<std::string, Tensor>& c, Precision p) {
    const int64_t N = c.at("qweight").size(0), K = c.at("qweight").size(1) * 2;
    const int64_t Np = nunchaku::padded_n(N), Kp = nunchaku::padded_k(K), rows = nunchaku::padded_scale_rows(p, K);
    tensors.emplace_back(prefix + ".qweight", nunchaku::pack_qweight(c.at("qweight"), Np, Kp));
    tensors.emplace_back(prefix + ".wscales", p == Precision::INT4 ? nunchaku::pack_wscales_int4(c.at("wscales"), Np, rows)
                                                                    : nunchaku::pack_wscales_nvfp4(c.at("wscales"), Np, rows * 16));
    tensors.emplace_back(prefix + ".bias", nunchaku::pack_vector(c.at("bias"), Np, "bias"));
    tensors.emplace_back(prefix + "." + spell("smooth"), nunchaku::pack_vector(c.at("smooth"), Kp, "smooth"));
    tensors.emplace_back(prefix + "." + spell("smooth_orig"), nunchaku::pack_vector(c.at("smooth"), Kp, "smooth_orig"));
    tensors.emplace_back(prefix + "." + spell("lora_down"), nunchaku::pack_lora_down(c.at("proj_down"), Kp));
    tensors.emplace_back(prefix + "." + spell("lora_up"), nunchaku::pack_lora_up(c.at("proj_up"), Np));
    if (c.count("wtscale")) tensors.emplace_back(prefix + ".wtscale", c.at("wtscale"));
  }

  // Unquantized tensors and an AWQ W4A16 modulation layer, which convert carries over unchanged.
  void add_unquantized(uint32_t seed) {
    tensors.emplace_back("x_embedder.weight", random_tensor(DType::BF16, {64, 16}, seed));
    tensors.emplace_back("x_embedder.bias", random_tensor(DType::BF16, {64}, seed + 1));
    tensors.emplace_back("norm_out.linear.weight", random_tensor(DType::F32, {8, 8}, seed + 2));
    tensors.emplace_back("transformer_blocks.0.norm1.linear.qweight", random_tensor(DType::I32, {96, 8}, seed + 3));
    tensors.emplace_back("transformer_blocks.0.norm1.linear.wscales", random_tensor(DType::BF16, {1, 768}, seed + 4));
    tensors.emplace_back("transformer_blocks.0.norm1.linear.wzeros", random_tensor(DType::BF16, {1, 768}, seed + 5));
    tensors.emplace_back("transformer_blocks.0.norm1.linear.bias", random_tensor(DType::BF16, {768}, seed + 6));
  }

  std::map<std::string, std::string> metadata() const {
    std::map<std::string, std::string> md;
    md["model_class"] = model_class;
    md["config"] = config.dump();
    const bool fp4 = precision == "fp4_e2m1_all";
    nlohmann::json q = {{"method", "svdquant"},
                        {"weight", {{"dtype", precision}, {"scale_dtype", nullptr}, {"group_size", fp4 ? 16 : 64}}},
                        {"activation", {{"dtype", precision}, {"scale_dtype", nullptr}, {"group_size", fp4 ? 16 : 64}}}};
    if (rank) q["rank"] = rank;
    md["quantization_config"] = q.dump();
    md["comfy_config"] = R"({"model_config": {"test": true}})";
    return md;
  }

  void write(const std::filesystem::path& path) const { write_safetensors(path, tensors, metadata()); }
};

inline nlohmann::json flux_config(int64_t heads, int64_t head_dim) {
  return {{"_class_name", "FluxTransformer2DModel"}, {"num_attention_heads", heads}, {"attention_head_dim", head_dim},
          {"num_layers", 1}, {"num_single_layers", 1}, {"in_channels", 64}};
}

// A random canonical layer: codes in range, positive scales, BF16 vectors.
inline std::map<std::string, Tensor> random_canonical_layer(int64_t N, int64_t K, int64_t R, Precision p, uint32_t seed) {
  std::map<std::string, Tensor> c;
  Tensor codes = random_tensor(DType::I8, {N, K}, seed);
  for (int64_t i = 0; i < codes.numel(); ++i) {
    int8_t& v = codes.data_as<int8_t>()[i];
    v = p == Precision::INT4 ? int8_t((v & 0xF) - 8) : int8_t(v & 0xF);
  }
  c["qweight"] = pack_codes(codes, p);
  if (p == Precision::INT4) {
    c["wscales"] = random_tensor(DType::BF16, {K / 64, N}, seed + 1);
  } else {
    Tensor s = random_tensor(DType::F8_E4M3, {K / 16, N}, seed + 1);
    for (int64_t i = 0; i < s.numel(); ++i) s.data_as<uint8_t>()[i] = uint8_t(0x20 + s.data_as<uint8_t>()[i] % 0x30);  // finite, > 0
    c["wscales"] = s;
    Tensor wt = Tensor::zeros(DType::BF16, {1});
    wt.data_as<uint16_t>()[0] = 0x3C4A;
    c["wtscale"] = wt;
  }
  c["bias"] = random_tensor(DType::BF16, {N}, seed + 2);
  c["smooth"] = random_tensor(DType::BF16, {K}, seed + 3);
  c["proj_down"] = random_tensor(DType::BF16, {K, R}, seed + 4);
  c["proj_up"] = random_tensor(DType::BF16, {N, R}, seed + 5);
  return c;
}

}  // namespace svdquant::testing
