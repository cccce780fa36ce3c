// svdquant quantize: SVDQuant a 16-bit checkpoint (diffusers folder or .safetensors) into a
// canonical folder, one layer at a time, with a progress line, a per-layer quality report
// (printed and written as <out>/quantization_report.json). docs/QUANTIZER.md.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "commands.hpp"
#include "svdquant/error.hpp"
#include "svdquant/quantize.hpp"

namespace svdquant::cli {
namespace {

std::string hms(double s) {
  const long t = long(s + 0.5);
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm%02lds", t / 3600, (t / 60) % 60, t % 60);
  else if (t >= 60) std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%lds", t);
  return buf;
}

}  // namespace

void add_quantize_command(CLI::App& app) {
  struct Args {
    std::string input, output, precision = "int4", dtype, calib, component = "transformer";
    int rank = 32, refine = 0, eval_rows = 128;
    std::vector<std::string> skip, only;
    std::vector<float> alphas = {0.25f, 0.4f, 0.5f, 0.6f, 0.75f};
    bool no_family_skips = false, no_report = false, quiet = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("quantize", "SVDQuant a 16-bit checkpoint into a canonical folder (docs/QUANTIZER.md)");
  cmd->add_option("input", args->input, "16-bit diffusers folder (or its component folder) or .safetensors file")->required();
  cmd->add_option("-o,--output", args->output, "output folder (must not exist)")->required();
  cmd->add_option("--precision", args->precision, "int4 | nvfp4")->capture_default_str();
  cmd->add_option("--rank", args->rank, "rank of the 16-bit low-rank branch")->capture_default_str();
  cmd->add_option("--dtype", args->dtype, "layer dtype T: bf16 | fp16 (default: the weights' dtype, bf16 for fp32)");
  cmd->add_option("--calib", args->calib, "calibration statistics (.safetensors, docs/QUANTIZER.md)");
  cmd->add_option("--modules-to-not-convert", args->skip, "module patterns kept in 16 bits (added to the family defaults)");
  cmd->add_option("--only", args->only, "quantize only modules matching these patterns");
  cmd->add_flag("--no-family-skips", args->no_family_skips, "do not apply the model family's default 16-bit modules");
  cmd->add_option("--refine", args->refine, "refinement steps L <- SVD_r(W - Q(W - L)) (best kept)")->capture_default_str();
  cmd->add_option("--alphas", args->alphas, "smoothing exponents searched with --calib (0 is always tried)");
  cmd->add_option("--eval-rows", args->eval_rows, "evaluation rows per layer (calibration samples or synthetic)")
      ->capture_default_str();
  cmd->add_option("--component", args->component, "diffusers component folder")->capture_default_str();
  cmd->add_flag("--no-report", args->no_report, "skip the RTN / smoothing-only / low-rank-only baselines");
  cmd->add_flag("-q,--quiet", args->quiet, "no progress line and no per-layer table");
  cmd->callback([args] {
    ModelQuantizeOptions opt;
    opt.precision = parse_precision(args->precision, "--precision");
    opt.rank = args->rank;
    if (!args->dtype.empty()) {
      if (args->dtype == "bf16") opt.dtype = HalfKind::BF16;
      else if (args->dtype == "fp16") opt.dtype = HalfKind::FP16;
      else throw ConfigError("--dtype: '" + args->dtype + "' is not one of bf16, fp16");
    }
    if (!args->calib.empty()) opt.calib = args->calib;
    opt.component = args->component;
    opt.modules_to_not_convert = args->skip;
    opt.only = args->only;
    opt.family_skips = !args->no_family_skips;
    opt.alpha_grid = args->alphas;
    opt.refine = args->refine;
    opt.eval_rows = args->eval_rows;
    opt.report = !args->no_report;
    const bool tty = isatty(fileno(stderr));
    const auto t0 = std::chrono::steady_clock::now();
    if (!args->quiet)
      opt.progress = [&](size_t done, size_t total, int64_t wdone, int64_t wtotal, const std::string& module) {
        const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const double frac = wtotal > 0 ? double(wdone) / double(wtotal) : 1.0;
        const double eta = frac > 0 ? el * (1.0 - frac) / frac : 0.0;
        std::fprintf(stderr, "%s[%zu/%zu] %5.1f%%  elapsed %s  ETA %s  %s%s", tty ? "\r\033[K" : "", done, total,
                     100.0 * frac, hms(el).c_str(), hms(eta).c_str(), module.c_str(), tty && done < total ? "" : "\n");
        std::fflush(stderr);
      };
    const ModelQuantizeReport rep = quantize_model(args->input, args->output, opt);
    if (!args->quiet) {
      std::printf("%-48s %6s %6s %5s %8s %8s %8s %8s\n", "layer", "N", "K", "alpha", "rtn", "smooth", "lowrank", "svdquant");
      double sum_ratio = 0;
      for (const auto& l : rep.layers) {
        std::printf("%-48s %6lld %6lld %5.2f %8.4f %8.4f %8.4f %8.4f\n", l.module.c_str(), (long long)l.N, (long long)l.K,
                    double(l.quality.alpha), l.quality.rtn, l.quality.smooth_only, l.quality.lowrank_only, l.quality.svdquant);
        if (l.quality.rtn > 0) sum_ratio += l.quality.svdquant / l.quality.rtn;
      }
      if (opt.report && !rep.layers.empty())
        std::printf("mean SVDQuant/RTN error ratio: %.3f over %zu layers\n", sum_ratio / double(rep.layers.size()),
                    rep.layers.size());
    }
    std::printf("quantized %zu layers (%zu linear layers kept in 16 bits, family '%s') in %s -> %s\n", rep.layers.size(),
                rep.kept_16bit.size(), rep.family.empty() ? "unknown" : rep.family.c_str(), hms(rep.seconds).c_str(),
                args->output.c_str());
  });
}

}  // namespace svdquant::cli
