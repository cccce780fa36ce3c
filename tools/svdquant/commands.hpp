// Subcommands of the svdquant CLI. Each add_* registers one subcommand and its handler.
#pragma once
#include <CLI/CLI.hpp>

namespace svdquant::cli {

void add_inspect_command(CLI::App& app);
void add_forward_command(CLI::App& app);
void add_demo_command(CLI::App& app);
void add_convert_command(CLI::App& app);
void add_lora_command(CLI::App& app);
void add_quantize_command(CLI::App& app);

}  // namespace svdquant::cli
