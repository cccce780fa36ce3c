// svdquant inspect <file|folder>: layers, precision, rank, sizes and config of a checkpoint.
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "cli_util.hpp"
#include "commands.hpp"
#include "svdquant/checkpoint.hpp"

namespace svdquant::cli {

void add_inspect_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("inspect", "Show the layers, precision, rank, sizes and config of a checkpoint");
  auto path = std::make_shared<std::string>();
  auto as_json = std::make_shared<bool>(false);
  cmd->add_option("path", *path, "A canonical checkpoint folder or .safetensors file")->required();
  cmd->add_flag("--json", *as_json, "Print machine-readable JSON");
  cmd->callback([path, as_json] {
    Checkpoint ck = Checkpoint::open(*path);
    uint64_t total = 0, quant_bytes = 0;
    std::map<std::string, uint64_t> per_dtype;
    for (const auto& n : ck.tensor_names()) {
      const auto& ti = ck.info(n);
      total += ti.end - ti.begin;
      per_dtype[std::string(dtype_name(ti.dtype))] += ti.end - ti.begin;
    }
    nlohmann::json out;
    out["path"] = *path;
    out["files"] = ck.files().size();
    out["tensors"] = ck.tensor_names().size();
    out["bytes"] = total;
    if (ck.quant_config()) out["quantization_config"] = nlohmann::json::parse(ck.quant_config()->to_json());
    nlohmann::json layers = nlohmann::json::array();
    for (const auto& prefix : ck.quantized_layers()) {
      LayerWeights w = ck.layer(prefix);
      uint64_t b = 0;
      for (const auto& [name, t] : layer_tensors(w)) b += t.nbytes();
      quant_bytes += b;
      layers.push_back({{"prefix", prefix}, {"precision", std::string(to_string(w.desc.precision))},
                        {"dtype", w.desc.dtype == HalfKind::BF16 ? "bf16" : "fp16"}, {"N", w.desc.N}, {"K", w.desc.K},
                        {"rank", w.desc.R}, {"act_unsigned", w.desc.act_unsigned}, {"bias", w.desc.has_bias}, {"bytes", b}});
    }
    out["quantized_layers"] = layers;
    if (*as_json) {
      std::printf("%s\n", out.dump(2).c_str());
      return;
    }
    std::printf("%s: %zu file(s), %zu tensors, %s\n", path->c_str(), ck.files().size(), ck.tensor_names().size(), human_bytes(total).c_str());
    for (const auto& [dt, b] : per_dtype) std::printf("  %-8s %s\n", dt.c_str(), human_bytes(b).c_str());
    if (ck.quant_config()) std::printf("quantization_config: %s\n", nlohmann::json::parse(ck.quant_config()->to_json()).dump().c_str());
    else std::printf("quantization_config: none (precision inferred per layer from wscales)\n");
    std::printf("%zu quantized layer(s), %s:\n", layers.size(), human_bytes(quant_bytes).c_str());
    std::printf("  %-48s %-6s %-5s %7s %7s %5s %-8s %s\n", "prefix", "prec", "dtype", "N", "K", "rank", "unsigned", "size");
    for (const auto& l : layers)
      std::printf("  %-48s %-6s %-5s %7lld %7lld %5lld %-8s %s\n", l["prefix"].get<std::string>().c_str(),
                  l["precision"].get<std::string>().c_str(), l["dtype"].get<std::string>().c_str(), (long long)l["N"].get<int64_t>(),
                  (long long)l["K"].get<int64_t>(), (long long)l["rank"].get<int64_t>(), l["act_unsigned"].get<bool>() ? "yes" : "no",
                  human_bytes(l["bytes"].get<uint64_t>()).c_str());
  });
}

}  // namespace svdquant::cli
