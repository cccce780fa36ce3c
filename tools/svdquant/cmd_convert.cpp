// svdquant convert: nunchaku single-file checkpoint <-> canonical folder (docs/FORMAT.md
// "Nunchaku interop").
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "cli_util.hpp"
#include "commands.hpp"
#include "svdquant/error.hpp"
#include "svdquant/nunchaku_convert.hpp"

namespace svdquant::cli {

void add_convert_command(CLI::App& app) {
  struct Args {
    std::string input, output, to = "canonical", model_class;
    std::vector<std::string> act_unsigned, act_signed;
    double shard_gib = 5.0;
    bool quiet = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("convert", "Convert a nunchaku .safetensors to a canonical folder, or back (--to nunchaku)");
  cmd->add_option("input", a->input, "nunchaku .safetensors file, or canonical folder with --to nunchaku")->required();
  cmd->add_option("-o,--output", a->output, "Output folder (canonical) or .safetensors file (nunchaku)")->required();
  cmd->add_option("--to", a->to, "canonical | nunchaku")->capture_default_str();
  cmd->add_option("--act-unsigned", a->act_unsigned, "Module patterns of int4 layers taking unsigned GELU-shifted inputs "
                                                     "(overrides the model-family rules)");
  cmd->add_option("--act-signed", a->act_signed, "Module patterns of int4 layers taking signed inputs (overrides the rules)");
  cmd->add_option("--model-class", a->model_class, "nunchaku model_class to record (--to nunchaku), when the folder does not say");
  cmd->add_option("--shard-gib", a->shard_gib, "Shard canonical weights above this size (GiB)")->capture_default_str();
  cmd->add_flag("-q,--quiet", a->quiet, "No progress bar and no list of carried-over tensors");
  cmd->callback([a] {
    ConvertOptions opt;
    opt.progress = !a->quiet;
    opt.act_unsigned = a->act_unsigned;
    opt.act_signed = a->act_signed;
    opt.model_class = a->model_class;
    if (!(a->shard_gib > 0)) throw ConfigError("--shard-gib must be positive");
    opt.shard_bytes = uint64_t(a->shard_gib * double(uint64_t(1) << 30));
    const bool to_nunchaku = a->to == "nunchaku";
    if (!to_nunchaku && a->to != "canonical") throw ConfigError("--to: expected canonical or nunchaku, found '" + a->to + "'");
    if (!to_nunchaku && std::filesystem::is_directory(a->input))
      throw ConfigError(a->input + " is a folder: to convert a canonical checkpoint to nunchaku, pass --to nunchaku");
    const auto t0 = std::chrono::steady_clock::now();
    const ConvertReport r = to_nunchaku ? convert_canonical_to_nunchaku(a->input, a->output, opt)
                                        : convert_nunchaku_to_canonical(a->input, a->output, opt);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("converted %zu quantized layer(s) (%zu with unsigned activations), carried over %zu tensor(s) unchanged\n",
                r.quantized_layers.size(), r.act_unsigned_layers.size(), r.carried_tensors.size());
    if (!a->quiet)
      for (const auto& n : r.carried_tensors) std::printf("  carried: %s\n", n.c_str());
    std::printf("%s read, %s written in %.2f s (%s/s) -> %s\n", human_bytes(r.input_bytes).c_str(), human_bytes(r.output_bytes).c_str(), s,
                human_bytes(uint64_t(double(r.input_bytes) / (s > 0 ? s : 1e-9))).c_str(), a->output.c_str());
  });
}

}  // namespace svdquant::cli
