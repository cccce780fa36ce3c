// svdquant: command-line front end. Exit codes: 0 success, 1 bad input or failure, 2 usage error.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "commands.hpp"
#include "svdquant/error.hpp"

int main(int argc, char** argv) {
  CLI::App app{"svdquant: SVDQuant W4A4 linear layers (4-bit weights and activations + low-rank branch)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "svdquant 0.1.0");
  svdquant::cli::add_inspect_command(app);
  svdquant::cli::add_forward_command(app);
  svdquant::cli::add_demo_command(app);
  svdquant::cli::add_convert_command(app);
  svdquant::cli::add_lora_command(app);
  svdquant::cli::add_quantize_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const svdquant::Error& e) {
    std::fprintf(stderr, "svdquant: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "svdquant: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
