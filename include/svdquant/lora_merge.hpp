// Merging a PEFT/diffusers LoRA into a canonical checkpoint's low-rank branches, the way nunchaku
// composes LoRAs: no requantization, the LoRA is appended along the rank dimension
// (docs/FORMAT.md "Nunchaku interop", "LoRA merge").
//
// For a layer with a LoRA A: [r, K], B: [N, r] and strength s, the merged branch is
//   proj_down' = [proj_down | A^T (zero-padded to a multiple of 16 columns)]
//   proj_up'   = [proj_up   | T(s * scale * B) (zero-padded likewise)]
// so that out = ... + x proj_down' proj_up'^T = (previous output) + s * scale * (x A^T) B^T.
// proj_down multiplies the RAW input (NUMERICS.md §4.3): A is appended unchanged, NOT divided by
// the smoothing factor (dividing would be right only for a branch fed the smoothed input).
// `scale` is alpha / r when the file holds a `<module>.alpha` tensor, else 1.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace svdquant {

struct LoraMergeOptions {
  float strength = 1.0f;
  uint64_t shard_bytes = uint64_t(5) << 30;
  // Receives each warning (default: printed to stderr).
  std::function<void(const std::string&)> warn;
};

struct LoraMergeReport {
  std::vector<std::string> merged_layers;      // layers that received a LoRA
  std::vector<std::string> unmatched_modules;  // LoRA modules with no quantized layer of that name
  int64_t old_rank = 0, new_rank = 0;
};

// Reads the canonical checkpoint `folder` and the LoRA `lora_file` (keys `<module>.lora_A.weight` /
// `<module>.lora_B.weight`, or `.lora_down.weight` / `.lora_up.weight`, optionally prefixed by
// `transformer.` or `base_model.model.`), writes the merged checkpoint to `out_folder` atomically.
// Every layer keeps one rank (the checkpoint records a single rank): layers without a LoRA get
// zero columns, which change no output. Throws FormatError naming the LoRA tensor on a shape
// mismatch, and when no LoRA module matches a quantized layer.
LoraMergeReport merge_lora(const std::filesystem::path& folder, const std::filesystem::path& lora_file,
                           const std::filesystem::path& out_folder, const LoraMergeOptions& opt = {});

}  // namespace svdquant
