// `ferry serve MODEL`: loads a model folder as `ferry run` does (the same placement flags, the
// plan reserving the KV cache of --max-batch sequences of --context tokens) and serves it over
// an OpenAI-compatible HTTP API until SIGTERM or SIGINT (docs/serve.md).
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <memory>
#include <poll.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/distributed.h"
#include "cli/json_output.h"
#include "cli/load_options.h"
#include "cli/model_loading.h"
#include "cli/paths.h"
#include "cli/placement_flags.h"
#include "ferry/core/error.h"
#include "ferry/engine/engine.h"
#include "ferry/models/config.h"
#include "ferry/models/tokenizer.h"
#include "ferry/serve/server.h"

namespace ferry::cli {
namespace {

// The context per sequence when --context is not given: the model's positions, at most this
// (the plan reserves --max-batch times it of KV cache).
constexpr std::int64_t kDefaultServeContext = 2048;

struct ServeOptions {
  std::string model;
  serve::ServerOptions server;
  std::int64_t max_batch = 8;
  std::int64_t max_queue = 64;
  int threads = 0;  // compute threads; 0 = every CPU this process may use
  int micro_batches = 1;  // pipeline runs: engine::PipelineOptions::micro_batches
  bool no_progress = false;
  bool json = false;  // stdout: one JSON object once listening; the rest goes to stderr
  PlacementFlags placement;
};

// Note [Signals end the server]
// SIGTERM and SIGINT only write their number to a pipe (all a handler may safely do); the main
// thread waits on the pipe and stops the server, so every stream ends with its finish chunk and
// [DONE] and the process exits 0. A handler (not a blocked mask) works whatever threads LibTorch
// or the engine started before.
int g_signal_pipe[2] = {-1, -1};

void on_signal(int sig) {
  const int saved = errno;
  const char byte = static_cast<char>(sig);
  [[maybe_unused]] const ssize_t n = ::write(g_signal_pipe[1], &byte, 1);
  errno = saved;
}

void install_signal_handlers() {
  FERRY_CHECK(::pipe2(g_signal_pipe, O_CLOEXEC | O_NONBLOCK) == 0, IoError,
              "cannot create the signal pipe: {}", std::strerror(errno));
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  ::sigaction(SIGTERM, &action, nullptr);
  ::sigaction(SIGINT, &action, nullptr);
  // A client that disconnects makes a write fail with EPIPE, not kill the server.
  std::signal(SIGPIPE, SIG_IGN);
}

// Waits for SIGTERM or SIGINT (returning its number), or for the listener to stop (0).
int wait_for_signal(const serve::Server& server) {
  while (server.running()) {
    pollfd fd{.fd = g_signal_pipe[0], .events = POLLIN, .revents = 0};
    if (::poll(&fd, 1, 500) > 0) {
      char byte = 0;
      if (::read(g_signal_pipe[0], &byte, 1) == 1) return byte;
    }
  }
  return 0;
}

void check_flags(const ServeOptions& o) {
  check_placement_flags(with_rank(o.placement));
  serve::check_server_options(o.server);
  FERRY_CHECK(o.max_batch >= 1, InvalidArgument, "--max-batch: expected 1 or more, got {}",
              o.max_batch);
  FERRY_CHECK(o.max_queue >= 1, InvalidArgument, "--max-queue: expected 1 or more, got {}",
              o.max_queue);
  FERRY_CHECK(o.threads >= 0, InvalidArgument,
              "--threads: expected a positive count (or 0 for every usable CPU), got {}",
              o.threads);
  require_path("MODEL", o.model, PathKind::kFolder);
  require_path("the model's config", std::filesystem::path(o.model) / "config.json",
               PathKind::kFile);
}

int serve_model(const ServeOptions& o) {
  check_flags(o);
  install_signal_handlers();
  const std::filesystem::path folder(o.model);
  models::ModelConfig config = models::load_config(folder);
  // Text in, text out: the server needs the model's tokenizer.
  auto tokenizer =
      std::make_shared<const models::Tokenizer>(models::Tokenizer::load(folder, config.vocab_size));

  PlacementFlags placement = with_rank(o.placement);
  const std::int64_t context = resolve_context(placement, config, kDefaultServeContext);
  // One plan: the KV cache of max_batch sequences of `context` tokens is reserved.
  placement.batch = o.max_batch;
  placement.context = context;
  models::LoadModelOptions load = load_options(placement, models::kPromptAllowance);
  load.config = config;

  const ComputeSetup compute = set_up_compute(o.threads);
  // One rank of several (issue 16): ranks > 0 serve their stage until rank 0 stops.
  std::optional<Distributed> dist = join_pipeline(folder, load);
  if (dist && !dist->front()) return serve_rank(*dist, folder, load);
  std::FILE* info = o.json ? stderr : stdout;
  fmt::print(info, "ferry serve: loading {} ...\n", o.model);
  std::fflush(info);
  const models::LoadedModel loaded = [&] {
    try {
      return load_model_with_progress(folder, load, /*progress=*/!o.no_progress && !o.json);
    } catch (const OutOfBudget& e) {
      // The budget holds the KV cache of every sequence the server may run at once: say which
      // of serve's own flags size it.
      throw OutOfBudget(
          fmt::format("{} (ferry serve reserves the KV cache of --max-batch {} sequences of "
                      "--context {} tokens; a smaller --max-batch leaves more of the budget to "
                      "the weights, and more clients wait in the queue)",
                      e.what(), o.max_batch, context),
          e.fields());
    }
  }();
  fmt::print(info, "  {} ({} layers, hidden {}), {} thread(s), {}; modules per device:\n",
             loaded.config.model_type, loaded.config.n_layers, loaded.config.hidden_size,
             compute.threads, compute.blas);
  print_placement(info, loaded);
  fmt::print(info, "  batch up to {} sequences of {} tokens; {} more may wait\n", o.max_batch,
             context, o.max_queue);
  // Declared before the engine, so destroyed after it: its destructor ends the other ranks.
  std::unique_ptr<engine::Pipeline> pipeline;
  if (dist) {
    pipeline = std::make_unique<engine::Pipeline>(*dist->world, loaded.model, dist->layout,
                                                  engine::PipelineOptions{o.micro_batches});
    fmt::print(info, "  pipeline over {} ranks: {}\n", dist->world->size(),
               dist->layout.describe());
  }
  models::CausalLM& model = pipeline ? static_cast<models::CausalLM&>(*pipeline) : *loaded.model;

  engine::Engine engine(model,
                        {.max_batch = o.max_batch,
                         .max_queue = o.max_queue,
                         .context = context,
                         .decode = [tokenizer](const std::vector<std::int64_t>& ids) {
                           return tokenizer->decode(ids, /*skip_special_tokens=*/true);
                         }});
  serve::ServedModel served = serve::served_model(folder, loaded, tokenizer, context);
  if (placement.max_new_tokens_given) served.default_max_tokens = placement.max_new_tokens;
  serve::Server server(engine, std::move(served), o.server);
  server.start();
  // Tests and scripts wait for this line (or object).
  if (o.json) {
    nlohmann::ordered_json j = json_header("serve");
    j["url"] = server.url();
    j["host"] = o.server.host;
    j["port"] = server.port();
    j["model"] = server.model().id;
    j["context"] = context;
    j["max_batch"] = o.max_batch;
    j["max_queue"] = o.max_queue;
    j["threads"] = compute.threads;
    print_json(j);
  } else {
    fmt::print("ferry serve: listening on {}\n", server.url());
  }
  std::fflush(stdout);

  const int sig = wait_for_signal(server);
  if (sig == 0) {
    server.stop();
    throw IoError(fmt::format("ferry serve: the HTTP listener on {} stopped", server.url()));
  }
  fmt::print(stderr, "ferry serve: {}: stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  server.stop();
  fmt::print(info, "ferry serve: stopped\n");
  std::fflush(info);
  return 0;
}

}  // namespace

void add_serve_command(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand("serve", std::string(kServeDescription));
  auto o = std::make_shared<ServeOptions>();
  cmd->add_option("MODEL", o->model, "Model folder")->required();
  cmd->add_option("--host", o->server.host,
                  "Address to listen on (default 127.0.0.1; any other needs --api-key)");
  cmd->add_option("--port", o->server.port, "Port to listen on (0: a free one, printed)");
  cmd->add_option("--api-key", o->server.api_key,
                  "Require 'Authorization: Bearer KEY' on /v1/* (also FERRY_API_KEY)")
      ->envname("FERRY_API_KEY");
  cmd->add_option("--max-batch", o->max_batch,
                  "Sequences generated together (the KV cache of this many is reserved)");
  cmd->add_option("--max-queue", o->max_queue,
                  "Requests that may wait for a place in the batch; more get 429");
  add_placement_flags(cmd, o->placement);
  add_compute_flags(cmd, o->threads, o->no_progress);
  add_pipeline_flags(cmd, o->micro_batches);
  cmd->add_flag("--json", o->json,
                "Print one JSON object (url, port, model, ...) on stdout once listening; the "
                "rest goes to stderr");
  cmd->callback([&runner, o] { runner = [o] { return serve_model(*o); }; });
}

}  // namespace ferry::cli
