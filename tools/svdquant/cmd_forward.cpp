// svdquant forward: run one quantized layer on an input tensor `x`, write tensor `y`.
#include <chrono>
#include <cstdio>

#include "commands.hpp"
#include "svdquant/error.hpp"
#include "svdquant/linear.hpp"
#include "svdquant/safetensors.hpp"

namespace svdquant::cli {

void add_forward_command(CLI::App& app) {
  struct Args {
    std::string model, layer, input, output, backend = "auto", accumulate = "fp32", activations = "auto", x_name = "x";
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("forward", "Run one quantized layer: y = layer(x)");
  cmd->add_option("--model", a->model, "Canonical checkpoint folder or .safetensors file")->required();
  cmd->add_option("--layer", a->layer, "Layer prefix, e.g. transformer_blocks.0.attn.to_q")->required();
  cmd->add_option("--input", a->input, "safetensors file holding the input tensor (T, [..., K])")->required();
  cmd->add_option("--output", a->output, "safetensors file to write tensor 'y' to")->required();
  cmd->add_option("--input-name", a->x_name, "Name of the input tensor")->capture_default_str();
  cmd->add_option("--backend", a->backend, "auto | cpu | cuda | a backend name")->capture_default_str();
  cmd->add_option("--accumulate", a->accumulate, "fp32 | half (NUMERICS.md §4)")->capture_default_str();
  cmd->add_option("--activations", a->activations,
                  "auto | checkpoint | fp8 (NUMERICS.md §3, §5); auto: fp8 for int4 layers with fp32 accumulation on "
                  "cuda-sm90, checkpoint (4-bit) elsewhere")
      ->capture_default_str();
  cmd->callback([a] {
    LinearOptions opt;
    opt.backend = a->backend;
    opt.forward.accumulate = parse_accumulate(a->accumulate, "--accumulate");
    opt.forward.activations = parse_activations(a->activations, "--activations");
    Checkpoint ck = Checkpoint::open(a->model);
    SafetensorsFile in = SafetensorsFile::open(a->input);
    if (!in.contains(a->x_name)) throw FormatError(a->input + ": no tensor named '" + a->x_name + "'");
    Tensor x = in.tensor(a->x_name);
    LayerWeights w = ck.layer(a->layer);
    const DType T = w.desc.dtype == HalfKind::BF16 ? DType::BF16 : DType::F16;
    if (x.dtype() != T) throw FormatError(a->input + ": tensor '" + a->x_name + "' is " + std::string(dtype_name(x.dtype())) +
                                          " but the layer dtype is " + std::string(dtype_name(T)));
    SVDQuantLinear lin(w, opt);
    auto t0 = std::chrono::steady_clock::now();
    Tensor y = lin.forward(x);
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    write_safetensors(a->output, {{"y", y}}, {{"layer", a->layer}, {"backend", std::string(lin.backend().name())}});
    std::fprintf(stderr, "%s: %s -> %s on %s (accumulate=%s, activations=%s) in %.1f ms\n", a->layer.c_str(),
                 shape_str(x.shape()).c_str(), shape_str(y.shape()).c_str(), std::string(lin.backend().name()).c_str(),
                 a->accumulate.c_str(), std::string(to_string(lin.options().activations)).c_str(), ms);
  });
}

}  // namespace svdquant::cli
