// ferry-engine: every `ferry` command, with LibTorch (Note [Front end and engine] in
// commands.h). Users run `ferry`; the front end hands commands that compute to this program.
#include <cstdlib>
#include <malloc.h>

#include "cli/commands.h"
#include "ferry/core/error.h"

namespace ferry::cli {

void exec_engine() { throw InternalError("exec_engine called in the engine itself"); }

}  // namespace ferry::cli

int main(int argc, char** argv) {
  // Note [Freed memory goes back]
  // glibc raises its mmap threshold after a large block is freed, so later large blocks (the
  // read buffers of a --dtype conversion, prefill activations) come from the heap and stay in
  // the resident set after they are freed: 30 % above the CPU budget on the 1 GB demo. A fixed
  // threshold keeps blocks of 1 MiB or more in their own mappings, returned to the system when
  // freed, so the measured peak follows what ferry holds. The environment's own setting wins.
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") == nullptr) {
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    mallopt(M_TRIM_THRESHOLD, 4 << 20);
  }
  CLI::App app;
  ferry::cli::AppFlags flags;
  ferry::cli::add_global_flags(app, flags);
  ferry::cli::Runner runner;
  ferry::cli::add_demo_command(app, runner);
  ferry::cli::add_inspect_command(app, runner);
  ferry::cli::add_plan_command(app, runner);
  ferry::cli::add_make_model_command(app, runner);
  ferry::cli::add_run_command(app, runner);
  ferry::cli::add_chat_command(app, runner);
  ferry::cli::add_serve_command(app, runner);
  ferry::cli::add_dist_check_command(app, runner);
  return ferry::cli::run_app(app, runner, flags, argc, argv);
}
