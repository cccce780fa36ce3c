// svdquant: command-line front end. Exit codes: 0 success, 1 bad input or failure, 2 usage error.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <limits>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "commands.hpp"
#include "svdquant/error.hpp"

// The quantizer and the converter allocate and free buffers of tens to hundreds of MB per layer.
// glibc serves those with mmap and unmaps them on free, so every layer faulted its pages in again
// (BENCHMARKS.md: ~45 % of the quantizer's CPU time was system time). The CLI keeps freed memory
// in its heap instead: measured on a 1-block FLUX subset, 15.8 -> 12.6 s, page faults 2.2 M -> 0.3 M.
static void keep_freed_memory_in_the_heap() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
#endif
}

int main(int argc, char** argv) {
  keep_freed_memory_in_the_heap();
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
