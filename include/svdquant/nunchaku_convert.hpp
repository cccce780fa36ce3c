// Conversion between nunchaku's single-file checkpoints and canonical checkpoint folders
// (docs/FORMAT.md "Nunchaku interop"). Both directions are exact: every tensor of a nunchaku file
// survives nunchaku -> canonical -> nunchaku byte for byte.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace svdquant {

struct ConvertOptions {
  // Canonical output: weights above this size are sharded with an index.
  uint64_t shard_bytes = uint64_t(5) << 30;
  // Progress bar on stderr (only drawn when stderr is a terminal).
  bool progress = true;
  // nunchaku -> canonical, int4 only: layers (module patterns as in FORMAT.md §2) that consume
  // unsigned, GELU-shifted activations / signed ones, overriding the model-family rules. Layers that
  // neither a rule nor these patterns classify make the conversion fail, naming them.
  std::vector<std::string> act_unsigned;
  std::vector<std::string> act_signed;
  // canonical -> nunchaku: the nunchaku model_class to record, when the folder does not say.
  std::string model_class;
  // Receives each warning (default: printed to stderr).
  std::function<void(const std::string&)> warn;
};

struct ConvertReport {
  std::vector<std::string> quantized_layers;   // W4A4 layers converted
  std::vector<std::string> carried_tensors;    // tensors copied unchanged (unquantized, AWQ W4A16)
  std::vector<std::string> act_unsigned_layers;
  std::vector<std::string> padded_layers;      // layers whose nunchaku padding was kept
  std::vector<std::string> warnings;
  uint64_t input_bytes = 0;                    // bytes of tensor data read
  uint64_t output_bytes = 0;                   // bytes of tensor data written
};

// nunchaku `.safetensors` (metadata `config`, `quantization_config`, `model_class`) -> canonical
// diffusers folder `<folder>/transformer/...`, written atomically (nothing is left on failure).
ConvertReport convert_nunchaku_to_canonical(const std::filesystem::path& input, const std::filesystem::path& folder,
                                            const ConvertOptions& opt = {});

// Canonical folder (or file) -> nunchaku `.safetensors` with nunchaku's metadata, written atomically.
ConvertReport convert_canonical_to_nunchaku(const std::filesystem::path& input, const std::filesystem::path& file,
                                            const ConvertOptions& opt = {});

}  // namespace svdquant
