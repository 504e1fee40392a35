// `ferry run MODEL --prompt TEXT`: loads a checkpoint folder under a device map (disk offload
// included), streams generated text, and reports load time, time to first token, tokens per
// second and, per device, the bytes placed there, its budget and its peak.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>

#include "cli/commands.h"
#include "cli/distributed.h"
#include "cli/json_output.h"
#include "cli/load_options.h"
#include "cli/model_loading.h"
#include "cli/paths.h"
#include "cli/placement_flags.h"
#include "cli/run_report.h"
#include "cli/sampling_flags.h"
#include "ferry/core/error.h"
#include "ferry/core/log.h"
#include "ferry/dispatch/prefetch.h"
#include "ferry/io/safetensors_writer.h"
#include "ferry/models/config.h"
#include "ferry/models/generate.h"
#include "ferry/models/registry.h"
#include "ferry/models/tokenizer.h"
#include "io/json_file.h"

namespace ferry::cli {
namespace {

// A prompt read from a file or standard input is at most this long (a prompt is text for a
// context of at most a few hundred thousand tokens).
constexpr std::uint64_t kMaxPromptBytes = std::uint64_t{16} << 20;

struct RunOptions {
  std::string model;
  std::vector<std::string> prompts;  // "-": standard input
  std::string prompt_file;
  std::vector<std::string> prompt_ids;  // "1,2,3", one per sequence of the batch
  std::string dump_logits;
  SamplingFlags sampling;  // only the flags given are choices
  std::vector<std::string> stop;
  bool ignore_eos = false;
  bool json = false;
  bool quiet = false;  // stdout: the generated text only
  bool no_progress = false;
  int threads = 0;        // 0 = every CPU this process may use
  int micro_batches = 1;  // pipeline runs: engine::PipelineOptions::micro_batches
  PlacementFlags placement;
};

std::vector<std::int64_t> parse_ids(const std::string& text) {
  std::vector<std::int64_t> ids;
  std::size_t at = 0;
  while (at <= text.size()) {
    const std::size_t comma = std::min(text.find(',', at), text.size());
    const std::string item = text.substr(at, comma - at);
    std::size_t used = 0;
    std::int64_t v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    FERRY_CHECK(used == item.size() && !item.empty(), InvalidArgument,
                "--prompt-ids: '{}' is not an integer (expected e.g. 1,2,3)", item);
    ids.push_back(v);
    at = comma + 1;
  }
  return ids;
}

double seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Every flag is checked before anything is read or loaded.
void check_flags(const RunOptions& o) {
  const int sources = (o.prompts.empty() ? 0 : 1) + (o.prompt_file.empty() ? 0 : 1) +
                      (o.prompt_ids.empty() ? 0 : 1);
  FERRY_CHECK(sources == 1, InvalidArgument,
              "give one of --prompt TEXT (-p; '-' reads standard input), --file FILE (-f) or "
              "--prompt-ids 1,2,3; got {}",
              sources == 0 ? "none" : "several");
  FERRY_CHECK(std::count(o.prompts.begin(), o.prompts.end(), "-") <= 1, InvalidArgument,
              "--prompt -: standard input can be read once; got '-' {} times",
              std::count(o.prompts.begin(), o.prompts.end(), "-"));
  for (const std::string& ids : o.prompt_ids) (void)parse_ids(ids);
  check_placement_flags(with_rank(o.placement));
  FERRY_CHECK(o.threads >= 0, InvalidArgument,
              "--threads: expected a positive count (or 0 for every usable CPU), got {}",
              o.threads);
  check_sampling_flags(o.sampling);
  for (const std::string& stop : o.stop) {
    FERRY_CHECK(!stop.empty(), InvalidArgument, "--stop: expected a non-empty string");
  }
  FERRY_CHECK(!(o.json && o.quiet), InvalidArgument,
              "--quiet and --json: choose one (--json prints one object on stdout)");
  require_path("MODEL", o.model, PathKind::kFolder);
  require_path("the model's config", std::filesystem::path(o.model) / "config.json",
               PathKind::kFile);
  if (!o.prompt_file.empty()) require_path("--file", o.prompt_file, PathKind::kFile);
  if (!o.dump_logits.empty()) require_output_file("--dump-logits", o.dump_logits);
}

// Standard input, up to kMaxPromptBytes.
std::string read_stdin() {
  std::string text;
  char buffer[65536];
  for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, stdin)) > 0;) {
    text.append(buffer, n);
    FERRY_CHECK(text.size() <= kMaxPromptBytes, InvalidArgument,
                "--prompt -: standard input is larger than {} bytes, the most a prompt may be",
                kMaxPromptBytes);
  }
  FERRY_CHECK(!std::ferror(stdin), IoError, "--prompt -: cannot read standard input");
  return text;
}

// The prompts' texts: --prompt (with '-' read from standard input) or --file.
std::vector<std::string> prompt_texts(const RunOptions& o) {
  if (!o.prompt_file.empty()) {
    // A regular file of bounded size: a FIFO or device is refused before it could block.
    return {io::read_text_file(o.prompt_file, kMaxPromptBytes)};
  }
  std::vector<std::string> texts;
  for (const std::string& p : o.prompts) texts.push_back(p == "-" ? read_stdin() : p);
  return texts;
}

nlohmann::ordered_json prefetch_json(const dispatch::Prefetcher& prefetcher) {
  const dispatch::PrefetchStats st = prefetcher.stats();
  return {{"lookahead", prefetcher.options().lookahead},
          {"host_budget_bytes", st.host_budget_bytes},
          {"device_budget_bytes", st.device_budget_bytes},
          {"peak_host_reserved_bytes", st.peak_host_reserved_bytes},
          {"peak_device_reserved_bytes", st.peak_device_reserved_bytes},
          {"peak_pool_bytes", st.peak_pool_bytes},
          {"bytes_read", st.bytes_read},
          {"page_cache_bytes", st.page_cache_bytes},
          {"direct_bytes", st.direct_bytes},
          {"in_place_bytes", st.in_place_bytes},
          {"bytes_to_device", st.bytes_to_device},
          {"hits", st.hits},
          {"waits", st.waits},
          {"late", st.late},
          {"misses", st.misses},
          {"evictions", st.evictions},
          {"forwards", st.forwards}};
}

int run(const RunOptions& o) {
  check_flags(o);
  const std::filesystem::path folder(o.model);
  // config.json, read once: it bounds token ids before anything is loaded, and load_model uses
  // this copy.
  models::ModelConfig config = models::load_config(folder);
  const std::int64_t vocab_size = config.vocab_size;
  const bool has_text = o.prompt_ids.empty();
  std::optional<models::Tokenizer> tokenizer;
  if (has_text) {
    tokenizer = models::Tokenizer::load(folder, vocab_size);
  } else if (std::filesystem::exists(folder / "tokenizer.json") ||
             std::filesystem::exists(folder / "tokenizer.model")) {
    // Only for showing the output: --prompt-ids works without a usable tokenizer.
    try {
      tokenizer = models::Tokenizer::load(folder, vocab_size);
    } catch (const Unsupported& e) {
      log_warning("{}; printing token ids instead of text", e.what());
    }
  }
  std::vector<std::string> texts;
  std::vector<std::vector<std::int64_t>> prompts;
  if (has_text) {
    texts = prompt_texts(o);
    for (std::size_t i = 0; i < texts.size(); ++i) {
      prompts.push_back(tokenizer->encode(texts[i]));
      FERRY_CHECK(!prompts.back().empty(), InvalidArgument,
                  "{}: prompt {} is empty (0 tokens): expected at least one token",
                  o.prompt_file.empty() ? "--prompt" : "--file", i + 1);
    }
  } else {
    for (const std::string& ids : o.prompt_ids) {
      prompts.push_back(parse_ids(ids));
      for (const std::int64_t id : prompts.back()) {
        FERRY_CHECK(id >= 0 && id < vocab_size, InvalidArgument,
                    "--prompt-ids: token id {} is outside the vocabulary: expected 0 to {}", id,
                    vocab_size - 1);
      }
    }
  }

  std::size_t longest = 0;
  for (const auto& p : prompts) longest = std::max(longest, p.size());
  PlacementFlags placement = with_rank(o.placement);
  placement.batch = static_cast<std::int64_t>(prompts.size());
  const auto check_context = [&](std::int64_t max_new_tokens) {
    const std::int64_t needed = static_cast<std::int64_t>(longest) + max_new_tokens;
    FERRY_CHECK(placement.context == 0 || needed <= placement.context, InvalidArgument,
                "--context {}: the longest prompt ({} tokens) plus --max-new-tokens ({}) needs {}",
                placement.context, longest, max_new_tokens, needed);
  };
  // Checked before loading: -n, else generation_config.json's max_new_tokens (read here, and
  // again by load_model), else the default.
  if (placement.max_new_tokens_given) {
    check_context(placement.max_new_tokens);
  } else {
    const std::optional<models::GenerationConfig> file = models::load_generation_config(folder);
    check_context(
        models::resolve_max_new_tokens(file.value_or(models::GenerationConfig{}), std::nullopt));
  }
  models::LoadModelOptions load = load_options(placement, static_cast<std::int64_t>(longest));
  load.config = config;

  const auto [threads, blas] = set_up_compute(o.threads);
  const std::uint64_t footprint = runtime_footprint();

  // One rank of several (issue 16): this rank loads only its stage; ranks > 0 serve it.
  std::optional<Distributed> dist = join_pipeline(folder, load);
  if (dist && !dist->front()) return serve_rank(*dist, folder, load);

  // Statistics go to stdout, or to stderr with --quiet (stdout then holds only the text).
  std::FILE* info = o.quiet ? stderr : stdout;
  if (!o.json) fmt::print(info, "ferry run: loading {} ...\n", o.model);
  std::fflush(info);
  const auto load_start = std::chrono::steady_clock::now();
  models::LoadedModel loaded =
      load_model_with_progress(folder, load, /*progress=*/!o.json && !o.no_progress);
  const double load_seconds = seconds(load_start);
  std::unique_ptr<engine::Pipeline> pipeline;
  if (dist) {
    pipeline = std::make_unique<engine::Pipeline>(*dist->world, loaded.model, dist->layout,
                                                  engine::PipelineOptions{o.micro_batches});
  }
  models::CausalLM& model = pipeline ? static_cast<models::CausalLM&>(*pipeline) : *loaded.model;

  const std::map<std::string, std::uint64_t> placed = placed_bytes(loaded);
  if (!o.json) {
    fmt::print(info,
               "  {} ({} layers, hidden {}, computing in {}), loaded in {:.2f} s; modules per "
               "device:\n",
               loaded.config.model_type, loaded.config.n_layers, loaded.config.hidden_size,
               torch_name(loaded.compute_dtype), load_seconds);
    print_placement(info, loaded);
    if (dist) {
      fmt::print(info, "  pipeline over {} ranks: {}\n", dist->world->size(),
                 dist->layout.describe());
    }
    if (prompts.size() == 1) {
      fmt::print(info, "  prompt: {} token(s)\n", prompts.front().size());
    } else {
      fmt::print(info, "  {} prompts, generated together as one batch\n", prompts.size());
    }
    if (!o.quiet && prompts.size() == 1) {
      fmt::print("---\n");
      if (has_text) fmt::print("{}", texts.front());
    }
    std::fflush(stdout);
  }

  // Flags given win; generation_config.json (then config.json's eos ids) fills in the rest.
  models::GenerationChoices chosen = o.sampling.chosen;
  if (placement.max_new_tokens_given) chosen.max_new_tokens = placement.max_new_tokens;
  if (o.ignore_eos) chosen.eos_token_ids = std::vector<std::int64_t>{};
  chosen.stop_strings = o.stop;
  models::GenerateOptions g = models::resolve_generate_options(loaded.generation, chosen);
  g.keep_prompt_logits = !o.dump_logits.empty();
  if (!o.ignore_eos && tokenizer && tokenizer->eos_token_id())
    g.eos_token_ids.push_back(*tokenizer->eos_token_id());
  std::vector<std::int64_t> streamed;
  std::size_t printed = 0;
  if (tokenizer) {
    g.decode = [&](const std::vector<std::int64_t>& ids) { return tokenizer->decode(ids, true); };
  }
  // One prompt streams its text as it comes; a batch prints each prompt's when all are done.
  if (!o.json && prompts.size() == 1) {
    g.on_token = [&](std::size_t row, std::int64_t token) {
      if (row != 0) return;
      streamed.push_back(token);
      if (!tokenizer) {
        fmt::print("{} ", token);
      } else {
        const std::string text = tokenizer->decode(streamed, true);
        if (text.size() > printed) fmt::print("{}", text.substr(printed));
        printed = std::max(printed, text.size());
      }
      std::fflush(stdout);
    };
  }
  const models::GenerateResult r = models::generate(model, prompts, g);
  if (pipeline) pipeline->finish();
  if (!o.dump_logits.empty()) {
    io::save_safetensors(o.dump_logits, {{"logits", r.prompt_logits},
                                         {"input_ids", at::tensor(prompts.front(), at::kLong)}});
  }
  const double tps =
      r.decode_seconds > 0 ? static_cast<double>(r.decode_steps) / r.decode_seconds : 0.0;

  const std::vector<DeviceReport> devices = device_reports(loaded, load, placed, footprint);
  std::map<std::string, std::uint64_t> peak;
  std::vector<std::string> over;
  for (const DeviceReport& d : devices) {
    peak[d.key] = d.peak;
    if (d.over) {
      over.push_back(d.key);
      log_warning("{} peaked at {}, over its budget: {} × 1.05{} = {}", d.key, format_bytes(d.peak),
                  format_bytes(*d.budget),
                  d.key == "cpu" ? fmt::format(" + the runtime's {}", format_bytes(footprint)) : "",
                  format_bytes(d.limit));
    }
  }
  const std::string text = tokenizer ? tokenizer->decode(r.tokens.front(), true) : "";
  const std::shared_ptr<dispatch::Prefetcher> prefetcher =
      dispatch::model_prefetcher(loaded.model->module());

  if (o.json) {
    nlohmann::ordered_json j = json_header("run");
    j["text"] = text;
    j["token_ids"] = r.tokens.front();
    j["prompt_ids"] = prompts.front();
    j["finish_reason"] = r.finish_reasons.front();
    j["device_map"] = nlohmann::ordered_json::parse(
        loaded.device_map.empty() ? "{}" : loaded.device_map.to_json());
    j["load_seconds"] = load_seconds;
    j["first_token_seconds"] = r.first_token_seconds;
    j["tokens_per_second"] = tps;
    j["decode_seconds"] = r.decode_seconds;
    j["decode_steps"] = r.decode_steps;
    // Note [Where a step's time goes] in src/kernels/gemv.cpp: the rest of the decode is
    // decode_seconds less decode_products.seconds (with streamed weights, waiting for them too).
    j["decode_products"] = {{"seconds", r.decode_product_seconds},
                            {"calls", r.decode_product_calls},
                            {"weight_bytes", r.decode_product_bytes}};
    j["peak_bytes"] = peak;
    j["placed_bytes"] = placed;
    nlohmann::ordered_json per_device = nlohmann::ordered_json::object();
    for (const DeviceReport& d : devices) {
      nlohmann::ordered_json e;
      e["placed_bytes"] = d.placed;
      e["budget_bytes"] = d.budget ? nlohmann::ordered_json(*d.budget) : nullptr;
      e["reserves"] = d.reserves;
      e["peak_bytes"] = d.peak;
      if (d.key == "cpu") e["page_cache_in_place_bytes"] = d.page_cache_in_place;
      e["limit_bytes"] = d.budget ? nlohmann::ordered_json(d.limit) : nullptr;
      e["over_budget"] = d.over;
      per_device[d.key] = e;
    }
    j["devices"] = per_device;
    j["runtime_footprint_bytes"] = footprint;
    j["over_budget"] = over;
    j["threads"] = threads;
    j["blas"] = blas;
    j["io"] = placement.io;
    j["quantize"] = placement.quantize.empty() ? "none" : placement.quantize;
    if (prefetcher) j["prefetch"] = prefetch_json(*prefetcher);
    if (dist) {
      nlohmann::ordered_json p;
      p["world_size"] = dist->world->size();
      nlohmann::ordered_json stages = nlohmann::ordered_json::array();
      for (const models::StageRange& s : dist->layout.stages) stages.push_back({s.begin, s.end});
      p["stages"] = std::move(stages);
      p["micro_batches"] = o.micro_batches;
      p["step_seconds"] = pipeline->step_seconds();
      p["stage_compute_seconds"] = pipeline->stage_compute_seconds();
      double computing = 0;
      for (double c : pipeline->stage_compute_seconds()) computing += c;
      // Meaningful with one micro-batch (stages one after another): the rest is passing data.
      p["communication_seconds"] = std::max(0.0, pipeline->step_seconds() - computing);
      j["pipeline"] = std::move(p);
    }
    if (r.tokens.size() > 1) j["batch_token_ids"] = r.tokens;
    // Every prompt of the batch (the fields above are the first one's).
    nlohmann::ordered_json outputs = nlohmann::ordered_json::array();
    for (std::size_t i = 0; i < r.tokens.size(); ++i) {
      nlohmann::ordered_json out;
      out["index"] = i;
      if (has_text) out["prompt"] = texts[i];
      out["prompt_ids"] = prompts[i];
      out["text"] = tokenizer ? tokenizer->decode(r.tokens[i], true) : "";
      out["token_ids"] = r.tokens[i];
      out["finish_reason"] = r.finish_reasons[i];
      outputs.push_back(std::move(out));
    }
    j["outputs"] = std::move(outputs);
    print_json(j);  // generated text may cut a multi-byte character: replaced, not an error
    return 0;
  }
  if (prompts.size() > 1) {
    for (std::size_t i = 0; i < r.tokens.size(); ++i) {
      const std::string generated = tokenizer ? tokenizer->decode(r.tokens[i], true)
                                              : fmt::format("{}", fmt::join(r.tokens[i], " "));
      if (o.quiet) {
        fmt::print("{}\n", generated);
      } else {
        fmt::print("--- prompt {} of {} ---\n{}{}\n", i + 1, r.tokens.size(),
                   has_text ? texts[i] : "", generated);
      }
      std::fflush(stdout);
      fmt::print(info, "  prompt {}: finish: {}; {} token(s) generated\n", i + 1,
                 r.finish_reasons[i], r.tokens[i].size());
    }
    if (!o.quiet) fmt::print("---\n");
  } else {
    if (o.quiet) {
      fmt::print("\n");
      std::fflush(stdout);
    } else {
      fmt::print("\n---\n");
    }
    fmt::print(info, "  finish: {}; {} token(s) generated\n", r.finish_reasons.front(),
               r.tokens.front().size());
  }
  fmt::print(info, "  load {:.2f} s, first token {:.2f} s, {:.2f} tokens/s\n", load_seconds,
             r.first_token_seconds, tps);
  if (r.decode_steps > 0 && r.decode_product_calls > 0) {
    const double steps = static_cast<double>(r.decode_steps);
    fmt::print(info,
               "  a decode step: {:.2f} ms in the weight products ({} read, {:.1f} GB/s), {:.2f} "
               "ms in the rest\n",
               1e3 * r.decode_product_seconds / steps,
               format_bytes(static_cast<std::uint64_t>(r.decode_product_bytes / r.decode_steps)),
               r.decode_product_seconds > 0
                   ? static_cast<double>(r.decode_product_bytes) / 1e9 / r.decode_product_seconds
                   : 0.0,
               1e3 * (r.decode_seconds - r.decode_product_seconds) / steps);
  }
  fmt::print(info,
             "  memory per device (the CPU's peak includes the runtime's {}; page cache used in "
             "place is clean and reclaimable, and not counted):\n",
             format_bytes(footprint));
  for (const DeviceReport& d : devices) fmt::print(info, "    {}\n", device_line(d));
  fmt::print(info, "  {} thread(s), {}", threads, blas);
  if (prefetcher) {
    const dispatch::PrefetchStats st = prefetcher->stats();
    fmt::print(info,
               "\n  streamed {} from disk ({} I/O: {} from the page cache, {} O_DIRECT; {} used in "
               "place from the page cache), {} to devices; prefetch {} ({} hits, {} waits, "
               "{} late, {} misses); staging peak: host {} of {}, device {} of {}",
               format_bytes(st.bytes_read), placement.io, format_bytes(st.page_cache_bytes),
               format_bytes(st.direct_bytes), format_bytes(st.in_place_bytes),
               format_bytes(st.bytes_to_device), prefetcher->options().lookahead ? "on" : "off",
               st.hits, st.waits, st.late, st.misses, format_bytes(st.peak_host_reserved_bytes),
               format_bytes(st.host_budget_bytes), format_bytes(st.peak_device_reserved_bytes),
               format_bytes(st.device_budget_bytes));
  }
  fmt::print(info, "\n");
  if (!o.dump_logits.empty()) fmt::print(info, "  prompt logits written to {}\n", o.dump_logits);
  return 0;
}

}  // namespace

void add_run_command(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand("run", std::string(kRunDescription));
  auto o = std::make_shared<RunOptions>();
  cmd->add_option("MODEL", o->model, "Model folder")->required();
  cmd->add_option("-p,--prompt", o->prompts,
                  "Prompt text (repeat for a batch); '-' reads it from standard input")
      ->allow_extra_args(false);
  cmd->add_option("-f,--file", o->prompt_file, "Read the prompt from a file (at most 16 MiB)");
  cmd->add_option("--prompt-ids", o->prompt_ids,
                  "Prompt token ids, e.g. 1,2,3 (no tokenizer needed; repeat for a batch)");
  cmd->add_option("--dump-logits", o->dump_logits, "Write the prompt's logits (safetensors)");
  add_sampling_flags(cmd, o->sampling);
  cmd->add_option("--stop", o->stop, "Stop when the text contains this (repeatable)")
      ->allow_extra_args(false);
  cmd->add_flag("--ignore-eos", o->ignore_eos, "Do not stop at EOS");
  add_placement_flags(cmd, o->placement);
  cmd->add_flag("--json", o->json, "Print one JSON object (docs/cli.md)");
  cmd->add_flag("--quiet", o->quiet,
                "Print only the generated text on stdout; statistics go to stderr");
  add_compute_flags(cmd, o->threads, o->no_progress);
  add_pipeline_flags(cmd, o->micro_batches);
  cmd->callback([&runner, o, cmd] {
    choose_given(*cmd, o->sampling);
    runner = [o] { return run(*o); };
  });
}

}  // namespace ferry::cli
