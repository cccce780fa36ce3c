// svdquant lora merge: append a PEFT/diffusers LoRA to the low-rank branches of a canonical
// checkpoint (include/svdquant/lora_merge.hpp, docs/FORMAT.md "LoRA merge").
#include <cmath>
#include <cstdio>

#include "commands.hpp"
#include "svdquant/error.hpp"
#include "svdquant/lora_merge.hpp"

namespace svdquant::cli {

void add_lora_command(CLI::App& app) {
  struct Args {
    std::string folder, lora, output;
    double strength = 1.0;
  };
  auto a = std::make_shared<Args>();
  auto* lora = app.add_subcommand("lora", "LoRA tools for canonical checkpoints");
  lora->require_subcommand(1);
  auto* merge = lora->add_subcommand("merge", "Append a LoRA to the low-rank branches (no requantization)");
  merge->add_option("folder", a->folder, "Canonical checkpoint folder")->required();
  merge->add_option("lora", a->lora, "LoRA .safetensors (A: [r, K] lora_A, B: [N, r] lora_B per module)")->required();
  merge->add_option("-o,--output", a->output, "Output folder (must not exist)")->required();
  merge->add_option("-s,--strength", a->strength, "LoRA strength s: y += s * (x A^T) B^T")->capture_default_str();
  merge->callback([a] {
    if (!std::isfinite(a->strength)) throw ConfigError("--strength must be a finite number");
    LoraMergeOptions opt;
    opt.strength = float(a->strength);
    const LoraMergeReport r = merge_lora(a->folder, a->lora, a->output, opt);
    std::printf("merged a LoRA into %zu layer(s) (%zu LoRA module(s) unmatched); rank %lld -> %lld -> %s\n", r.merged_layers.size(),
                r.unmatched_modules.size(), static_cast<long long>(r.old_rank), static_cast<long long>(r.new_rank), a->output.c_str());
  });
}

}  // namespace svdquant::cli
