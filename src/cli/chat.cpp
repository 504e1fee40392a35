// `ferry chat MODEL`: an interactive chat in the terminal. Each line read from standard input is
// a user turn; the conversation is rendered with the model's chat template (tokenizer_config.json,
// as `ferry serve` renders it) and the answer streams to standard output as it is generated.
// "/reset" forgets the conversation, "/exit" (or end of input) ends the session.
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <unistd.h>
#include <vector>

#include "cli/commands.h"
#include "cli/load_options.h"
#include "cli/model_loading.h"
#include "cli/paths.h"
#include "cli/placement_flags.h"
#include "cli/sampling_flags.h"
#include "ferry/core/error.h"
#include "ferry/engine/engine.h"
#include "ferry/engine/world.h"
#include "ferry/models/chat_template.h"
#include "ferry/models/config.h"
#include "ferry/models/generate.h"
#include "ferry/models/tokenizer.h"

namespace ferry::cli {
namespace {

// The context per conversation when --context is not given: the model's positions, at most this.
constexpr std::int64_t kDefaultChatContext = 4096;

struct ChatOptions {
  std::string model;
  std::string system;  // a system message opening the conversation
  std::vector<std::string> stop;
  bool ignore_eos = false;
  int threads = 0;
  bool no_progress = false;
  SamplingFlags sampling;
  PlacementFlags placement;
};

void check_flags(const ChatOptions& o) {
  // Every rank would chat on its own terminal: the pipeline's front ends are run and serve.
  const std::optional<engine::WorldInfo> world = engine::world_from_environment();
  FERRY_CHECK(!world || world->world_size < 2, Unsupported,
              "ferry chat does not run as one rank of several (WORLD_SIZE={}): serve the model "
              "with `ferry launch --nproc N -- serve MODEL` and chat with any OpenAI client",
              world ? world->world_size : 1);
  check_placement_flags(o.placement);
  check_sampling_flags(o.sampling);
  FERRY_CHECK(o.threads >= 0, InvalidArgument,
              "--threads: expected a positive count (or 0 for every usable CPU), got {}",
              o.threads);
  for (const std::string& stop : o.stop) {
    FERRY_CHECK(!stop.empty(), InvalidArgument, "--stop: expected a non-empty string");
  }
  require_path("MODEL", o.model, PathKind::kFolder);
  require_path("the model's config", std::filesystem::path(o.model) / "config.json",
               PathKind::kFile);
}

int chat(const ChatOptions& o) {
  check_flags(o);
  const std::filesystem::path folder(o.model);
  const models::ModelConfig config = models::load_config(folder);
  // The template is read and parsed before the weights: a model without one fails at once.
  const models::ChatTemplateSource source = models::read_chat_template_source(folder);
  if (source.source.empty()) {
    throw InvalidArgument(
        fmt::format("{} has no chat template ({} is not set): use `ferry run` with a prompt",
                    o.model, source.origin),
        ErrorFields{.path = "chat_template",
                    .file = (folder / "tokenizer_config.json").string(),
                    .expected = "a chat_template",
                    .actual = "none"});
  }
  const models::ChatTemplate chat_template =
      models::ChatTemplate::parse(source.source, source.origin);
  const models::Tokenizer tokenizer = models::Tokenizer::load(folder, config.vocab_size);

  PlacementFlags placement = o.placement;
  const std::int64_t context = resolve_context(placement, config, kDefaultChatContext);
  placement.batch = 1;
  placement.context = context;
  models::LoadModelOptions load = load_options(placement, models::kPromptAllowance);
  load.config = config;
  const ComputeSetup compute = set_up_compute(o.threads);
  const bool terminal = ::isatty(STDIN_FILENO) != 0;
  fmt::print(stderr, "ferry chat: loading {} ...\n", o.model);
  const models::LoadedModel loaded = load_model_with_progress(folder, load, !o.no_progress);
  fmt::print(stderr, "  {} ({} layers), {} thread(s), {}; context {} tokens\n",
             loaded.config.model_type, loaded.config.n_layers, compute.threads, compute.blas,
             context);
  print_placement(stderr, loaded);

  // Flags given win; generation_config.json (then config.json's eos ids) fills in the rest.
  models::GenerationChoices chosen = o.sampling.chosen;
  if (placement.max_new_tokens_given) chosen.max_new_tokens = placement.max_new_tokens;
  if (o.ignore_eos) chosen.eos_token_ids = std::vector<std::int64_t>{};
  const models::GenerateOptions g = models::resolve_generate_options(loaded.generation, chosen);
  std::vector<std::int64_t> eos = g.eos_token_ids;
  if (!o.ignore_eos && tokenizer.eos_token_id()) eos.push_back(*tokenizer.eos_token_id());

  engine::Engine engine(*loaded.model,
                        {.max_batch = 1,
                         .max_queue = 1,
                         .context = context,
                         .decode = [&tokenizer](const std::vector<std::int64_t>& ids) {
                           return tokenizer.decode(ids, true);
                         }});
  std::vector<models::ChatMessage> messages;
  if (!o.system.empty()) messages.push_back({.role = "system", .content = o.system});
  std::uint64_t seed = g.sampling.seed;
  if (terminal)
    fmt::print(stderr, "Type a message; /reset forgets the conversation, /exit ends.\n");
  std::string line;
  for (;;) {
    if (terminal) {
      fmt::print(stderr, "> ");
      std::fflush(stderr);
    }
    if (!std::getline(std::cin, line)) break;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      messages.resize(o.system.empty() ? 0 : 1);
      fmt::print(stderr, "(conversation reset)\n");
      continue;
    }
    if (line.empty()) continue;
    messages.push_back({.role = "user", .content = line});
    std::vector<std::int64_t> ids;
    try {
      ids = tokenizer.encode(models::apply_chat_template(chat_template, messages,
                                                         {.add_generation_prompt = true,
                                                          .bos_token = source.bos_token,
                                                          .eos_token = source.eos_token}),
                             /*add_special_tokens=*/false);
    } catch (const Error& e) {
      messages.pop_back();
      fmt::print(stderr, "ferry chat: {}\n", e.what());
      continue;
    }
    const std::int64_t room = context - static_cast<std::int64_t>(ids.size());
    if (room < 1) {
      messages.pop_back();
      fmt::print(stderr,
                 "ferry chat: the conversation ({} tokens) no longer fits the context of {} "
                 "tokens: /reset, or start with a larger --context\n",
                 ids.size(), context);
      continue;
    }
    engine::RequestOptions request{.max_new_tokens = std::min(g.max_new_tokens, room),
                                   .sampling = g.sampling,
                                   .eos_token_ids = eos,
                                   .stop_strings = o.stop};
    request.sampling.seed = seed++;  // a new draw per turn, reproducible from --seed
    engine::RequestHandle handle = engine.submit(std::move(ids), request);
    std::string answer;
    std::string reason;
    while (reason.empty()) {
      engine.step();
      while (auto e = handle.next(std::chrono::milliseconds(0))) {
        answer += e->text;
        fmt::print("{}", e->text);
        std::fflush(stdout);
        if (e->kind == engine::Event::Kind::kFinished) {
          reason = e->finish_reason;
          if (reason == "error") throw InternalError("ferry chat: generation failed: " + e->error);
          break;
        }
      }
    }
    fmt::print("\n");
    std::fflush(stdout);
    if (reason == "length" || reason == "context") {
      fmt::print(stderr, "(answer cut at {} tokens)\n", handle.tokens().size());
    }
    messages.push_back({.role = "assistant", .content = answer});
  }
  return 0;
}

}  // namespace

void add_chat_command(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand("chat", std::string(kChatDescription));
  auto o = std::make_shared<ChatOptions>();
  cmd->add_option("MODEL", o->model, "Model folder (with a chat template in tokenizer_config.json)")
      ->required();
  cmd->add_option("--system", o->system, "A system message that opens the conversation");
  add_sampling_flags(cmd, o->sampling);
  cmd->add_option("--stop", o->stop, "End an answer when its text contains this (repeatable)")
      ->allow_extra_args(false);
  cmd->add_flag("--ignore-eos", o->ignore_eos, "Do not stop at EOS");
  add_placement_flags(cmd, o->placement);
  add_compute_flags(cmd, o->threads, o->no_progress);
  cmd->callback([&runner, o, cmd] {
    choose_given(*cmd, o->sampling);
    runner = [o] { return chat(*o); };
  });
}

}  // namespace ferry::cli
