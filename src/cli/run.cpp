// `ferry run MODEL --prompt TEXT`: loads a checkpoint folder under a device map (disk offload
// included), streams generated text, and reports load time, time to first token, tokens per
// second and peak memory per device.
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sched.h>
#include <thread>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/placement_flags.h"
#include "cli/progress_bar.h"
#include "ferry/core/devices.h"
#include "ferry/core/error.h"
#include "ferry/core/log.h"
#include "ferry/core/memory.h"
#include "ferry/dispatch/prefetch.h"
#include "ferry/io/safetensors_writer.h"
#include "ferry/models/config.h"
#include "ferry/models/generate.h"
#include "ferry/models/registry.h"
#include "ferry/models/tokenizer.h"

namespace ferry::cli {
namespace {

struct RunOptions {
  std::string model;
  std::vector<std::string> prompts;
  std::vector<std::string> prompt_ids;  // "1,2,3", one per sequence of the batch
  std::string dump_logits;
  models::SamplingOptions sampling;
  // The sampling flags given (the others: generation_config.json's, else the defaults).
  models::GenerationChoices chosen;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  bool json = false;
  bool no_progress = false;
  int threads = 0;  // 0 = every CPU this process may use
  PlacementFlags placement;
};

// The BLAS LibTorch's CPU kernels call, from the libraries mapped into this process.
std::string blas_in_use() {
  std::FILE* f = std::fopen("/proc/self/maps", "r");
  if (f == nullptr) return "unknown";
  std::string found = "unknown";
  char line[4096];
  while (std::fgets(line, sizeof line, f) != nullptr) {
    const std::string_view l(line);
    if (l.find("openblas") != std::string_view::npos) {
      found = "OpenBLAS";
      break;
    }
    if (l.find("libmkl") != std::string_view::npos) {
      found = "MKL";
      break;
    }
    if (l.find("/libblas.so") != std::string_view::npos) found = "reference BLAS (slow)";
  }
  std::fclose(f);
  return found;
}

int usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1U, std::thread::hardware_concurrency());
}

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

// Every flag is checked before anything is loaded.
void check_flags(const RunOptions& o) {
  FERRY_CHECK(!o.prompts.empty() != !o.prompt_ids.empty(), InvalidArgument,
              "give either --prompt TEXT or --prompt-ids 1,2,3");
  check_placement_flags(o.placement);
  FERRY_CHECK(o.threads >= 0, InvalidArgument,
              "--threads: expected a positive count (or 0 for every usable CPU), got {}",
              o.threads);
  const models::SamplingOptions& s = o.sampling;
  FERRY_CHECK(std::isfinite(s.temperature) && s.temperature >= 0, InvalidArgument,
              "--temperature: expected 0 (greedy) or more, got {}", s.temperature);
  FERRY_CHECK(s.top_k >= 0, InvalidArgument, "--top-k: expected 0 (off) or more, got {}", s.top_k);
  FERRY_CHECK(std::isfinite(s.top_p) && s.top_p > 0 && s.top_p <= 1, InvalidArgument,
              "--top-p: expected a value in (0, 1], got {}", s.top_p);
  FERRY_CHECK(std::isfinite(s.repetition_penalty) && s.repetition_penalty > 0, InvalidArgument,
              "--repetition-penalty: expected a value above 0, got {}", s.repetition_penalty);
  std::error_code ec;
  if (!std::filesystem::exists(std::filesystem::path(o.model), ec)) {
    throw IoError(fmt::format("model {} does not exist", o.model),
                  ErrorFields{.file = o.model,
                              .expected = "a model folder",
                              .actual = "no such file or folder"});
  }
}

// Compute threads: at most the CPUs this process may use (more only oversubscribes them).
int compute_threads(int requested) {
  const int usable = usable_cpus();
  if (requested == 0) return usable;
  if (requested > usable) {
    log_warning("--threads {}: only {} CPU(s) are usable by this process; using {}", requested,
                usable, usable);
    return usable;
  }
  return requested;
}

// What the process holds beside its data — the runtime's own memory, the CPU budget's
// baseline — measured before any weight is loaded, after a small warm-up of the kernels a forward uses, which make the BLAS
// and thread pools allocate their per-thread buffers (they do so once, at first use).
std::uint64_t runtime_footprint() {
  {
    const at::Tensor a = at::randn({256, 256});
    const at::Tensor w = at::randn({256, 256});
    at::Tensor x = at::linear(a, w);
    x = at::softmax(at::matmul(x, x.t()), -1);
    x = at::silu(x) * at::rsqrt(x.pow(2).mean(-1, true) + 1e-6);
    (void)x.sum().item<float>();
  }
  // Plus ferry's own bookkeeping, which grows with the number of tensors and not with the
  // budget: modules and hooks, checkpoint headers, allocator caches (a few MiB on small models).
  constexpr std::uint64_t kBookkeepingBytes = std::uint64_t{16} << 20;
  return current_rss().value() + kBookkeepingBytes;
}

std::string reserve_summary(const plan::Resolution& r, Placement device) {
  std::string out;
  for (const plan::Reserve& reserve : r.reserves) {
    if (reserve.device != device) continue;
    out += fmt::format("{}{} {}", out.empty() ? "" : ", ", reserve.what,
                       format_bytes(reserve.bytes));
  }
  return out.empty() ? "none" : out;
}

// One device's memory: what rests there, its budget and reserves, its peak, and whether the
// peak kept the promise (≤ 1.05 × budget, plus the runtime's own memory on the CPU).
struct DeviceReport {
  std::string key;
  std::uint64_t placed = 0;
  std::optional<std::uint64_t> budget;
  std::map<std::string, std::uint64_t> reserves;
  std::uint64_t peak = 0;
  std::uint64_t limit = 0;
  bool over = false;
};

std::vector<DeviceReport> device_reports(const models::LoadedModel& loaded,
                                         const models::LoadModelOptions& load,
                                         const std::map<std::string, std::uint64_t>& placed,
                                         std::uint64_t footprint) {
  std::optional<plan::MemoryBudget> budget;
  if (loaded.resolution) {
    budget = loaded.resolution->budget;
  } else if (load.dispatch.max_memory) {
    budget = *load.dispatch.max_memory;
  }
  std::vector<Placement> keys{Placement::cpu()};
  for (int i = 0; i < simulated_gpu_count(); ++i) keys.push_back(Placement::gpu(i));
  if (budget) {
    for (const auto& [p, b] : budget->entries()) {
      if (std::find(keys.begin(), keys.end(), p) == keys.end()) keys.push_back(p);
    }
  }
  if (placed.contains("disk") &&
      std::find(keys.begin(), keys.end(), Placement::disk()) == keys.end()) {
    keys.push_back(Placement::disk());
  }
  std::vector<DeviceReport> out;
  for (const Placement p : keys) {
    DeviceReport d{.key = p.to_string()};
    if (auto it = placed.find(d.key); it != placed.end()) d.placed = it->second;
    if (p.is_disk()) {
      d.peak = d.placed;
      out.push_back(std::move(d));
      continue;
    }
    if (p.is_cpu()) {
      d.peak = peak_rss().value();
    } else if (p.index() < simulated_gpu_count()) {
      d.peak = sim_gpu_stats(p.index()).peak.value();
    }
    if (budget && budget->contains(p)) d.budget = budget->at(p).value();
    if (loaded.resolution) {
      for (const plan::Reserve& r : loaded.resolution->reserves) {
        if (r.device == p) d.reserves[r.what] += r.bytes;
      }
    }
    if (d.budget) {
      d.limit = *d.budget + *d.budget / 20 + (p.is_cpu() ? footprint : 0);
      d.over = d.peak > d.limit;
    }
    out.push_back(std::move(d));
  }
  return out;
}

int run(const RunOptions& o) {
  check_flags(o);
  const std::filesystem::path folder(o.model);
  // Token ids are bounded by the model's vocabulary (config.json, checked before anything else).
  const std::int64_t vocab_size = models::load_config(folder).vocab_size;
  std::optional<models::Tokenizer> tokenizer;
  if (!o.prompts.empty()) {
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
  std::vector<std::vector<std::int64_t>> prompts;
  if (o.prompt_ids.empty()) {
    for (const auto& p : o.prompts) prompts.push_back(tokenizer->encode(p));
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

  const int threads = compute_threads(o.threads);
  at::set_num_threads(threads);
  const std::string blas = blas_in_use();
  if (blas.starts_with("reference"))
    log_warning(
        "LibTorch runs on the reference BLAS (about 30x slower than OpenBLAS): install "
        "libopenblas0-openmp");

  std::size_t longest = 0;
  for (const auto& p : prompts) longest = std::max(longest, p.size());
  PlacementFlags placement = o.placement;
  placement.batch = static_cast<std::int64_t>(prompts.size());
  const auto check_context = [&](std::int64_t max_new_tokens) {
    const std::int64_t needed = static_cast<std::int64_t>(longest) + max_new_tokens;
    FERRY_CHECK(placement.context == 0 || needed <= placement.context, InvalidArgument,
                "--context {}: the longest prompt ({} tokens) plus --max-new-tokens ({}) needs {}",
                placement.context, longest, max_new_tokens, needed);
  };
  if (placement.max_new_tokens_given) check_context(placement.max_new_tokens);
  models::LoadModelOptions load = load_options(placement, static_cast<std::int64_t>(longest));
  const std::uint64_t footprint = runtime_footprint();

  if (!o.json) fmt::print("ferry run: loading {} ...\n", o.model);
  std::fflush(stdout);
  // The bar goes to stderr, and only to a terminal: piped output and --json stay clean.
  std::optional<LoadProgressBar> bar;
  if (!o.json && !o.no_progress && is_terminal(stderr)) {
    bar.emplace(stderr);
    load.dispatch.progress = [&bar](const dispatch::LoadProgress& p) { bar->update(p); };
  }
  const auto load_start = std::chrono::steady_clock::now();
  models::LoadedModel loaded = models::load_model(folder, load);
  const double load_seconds = seconds(load_start);
  bar.reset();

  // Bytes resting on each placement, from the map (tensors on meta still have their sizes).
  std::map<std::string, std::uint64_t> placed;
  for (const auto& t : loaded.model->module().named_parameters()) {
    const auto p = loaded.device_map.placement_of(t.name);
    placed[p ? p->to_string() : "cpu"] += static_cast<std::uint64_t>(t.tensor().nbytes());
  }
  if (!o.json) {
    fmt::print(
        "  {} ({} layers, hidden {}), loaded in {:.2f} s\n  placement:", loaded.config.model_type,
        loaded.config.n_layers, loaded.config.hidden_size, load_seconds);
    for (const auto& [where, bytes] : placed) fmt::print(" {} {}", where, format_bytes(bytes));
    fmt::print("\n");
    if (!loaded.device_map.empty()) {
      std::map<std::string, std::vector<std::string>> by_place;
      for (const auto& [path, p] : loaded.device_map.entries())
        by_place[p.to_string()].push_back(path);
      for (const auto& [where, paths] : by_place) {
        fmt::print("    {:<5} {} module(s): {}{}\n", where, paths.size(),
                   paths.front().empty() ? "(whole model)" : paths.front(),
                   paths.size() > 1 ? fmt::format(" ... {}", paths.back()) : "");
      }
    }
    if (loaded.resolution) {
      for (const auto& [device, bits] : loaded.resolution->plan.plan.min_required_bits) {
        const Placement p = device;
        fmt::print("    {} got nothing: its first module needs {} but {} of its {} budget is left "
                   "after reserves ({})\n",
                   p.to_string(), format_bytes((bits + 7) / 8),
                   format_bytes(loaded.resolution->plan.planning_budget.find(p)
                                    .value_or(Bytes(0))
                                    .value()),
                   format_bytes(loaded.resolution->budget.find(p).value_or(Bytes(0)).value()),
                   reserve_summary(*loaded.resolution, p));
      }
    }
    fmt::print("  prompt: {} token(s)\n---\n", prompts.front().size());
    if (tokenizer && o.prompt_ids.empty()) fmt::print("{}", o.prompts.front());
    std::fflush(stdout);
  }

  // Flags given win; generation_config.json (then config.json's eos ids) fills in the rest.
  models::GenerationChoices chosen = o.chosen;
  if (placement.max_new_tokens_given) chosen.max_new_tokens = placement.max_new_tokens;
  if (o.ignore_eos) chosen.eos_token_ids = std::vector<std::int64_t>{};
  chosen.stop_strings = o.stop;
  models::GenerateOptions g = models::resolve_generate_options(loaded.generation, chosen);
  if (!placement.max_new_tokens_given) check_context(g.max_new_tokens);
  g.keep_prompt_logits = !o.dump_logits.empty();
  if (!o.ignore_eos && tokenizer && tokenizer->eos_token_id())
    g.eos_token_ids.push_back(*tokenizer->eos_token_id());
  std::vector<std::int64_t> streamed;
  std::size_t printed = 0;
  if (tokenizer) {
    g.decode = [&](const std::vector<std::int64_t>& ids) { return tokenizer->decode(ids, true); };
  }
  if (!o.json) {
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
  const models::GenerateResult r = models::generate(*loaded.model, prompts, g);
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
      log_warning("{} peaked at {}, over its budget: {} × 1.05{} = {}", d.key,
                  format_bytes(d.peak), format_bytes(*d.budget),
                  d.key == "cpu" ? fmt::format(" + the runtime's {}", format_bytes(footprint)) : "",
                  format_bytes(d.limit));
    }
  }
  const std::string text = tokenizer ? tokenizer->decode(r.tokens.front(), true) : "";
  const std::shared_ptr<dispatch::Prefetcher> prefetcher =
      dispatch::model_prefetcher(loaded.model->module());

  if (o.json) {
    nlohmann::ordered_json j;
    j["text"] = text;
    j["token_ids"] = r.tokens.front();
    j["prompt_ids"] = prompts.front();
    j["finish_reason"] = r.finish_reasons.front();
    j["device_map"] = nlohmann::ordered_json::parse(
        loaded.device_map.empty() ? "{}" : loaded.device_map.to_json());
    j["load_seconds"] = load_seconds;
    j["first_token_seconds"] = r.first_token_seconds;
    j["tokens_per_second"] = tps;
    j["peak_bytes"] = peak;
    j["placed_bytes"] = placed;
    nlohmann::ordered_json per_device = nlohmann::ordered_json::object();
    for (const DeviceReport& d : devices) {
      nlohmann::ordered_json e;
      e["placed_bytes"] = d.placed;
      e["budget_bytes"] = d.budget ? nlohmann::ordered_json(*d.budget) : nullptr;
      e["reserves"] = d.reserves;
      e["peak_bytes"] = d.peak;
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
    if (prefetcher) {
      const dispatch::PrefetchStats st = prefetcher->stats();
      j["prefetch"] = {{"lookahead", prefetcher->options().lookahead},
                       {"host_budget_bytes", st.host_budget_bytes},
                       {"device_budget_bytes", st.device_budget_bytes},
                       {"peak_host_reserved_bytes", st.peak_host_reserved_bytes},
                       {"peak_device_reserved_bytes", st.peak_device_reserved_bytes},
                       {"peak_pool_bytes", st.peak_pool_bytes},
                       {"bytes_read", st.bytes_read},
                       {"bytes_to_device", st.bytes_to_device},
                       {"hits", st.hits},
                       {"waits", st.waits},
                       {"late", st.late},
                       {"misses", st.misses},
                       {"evictions", st.evictions},
                       {"forwards", st.forwards}};
    }
    if (r.tokens.size() > 1) j["batch_token_ids"] = r.tokens;
    // Generated text may cut a multi-byte character: invalid bytes become U+FFFD.
    fmt::print("{}\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
    return 0;
  }
  fmt::print("\n---\n  finish: {}; {} token(s) generated\n", r.finish_reasons.front(),
             r.tokens.front().size());
  fmt::print("  load {:.2f} s, first token {:.2f} s, {:.2f} tokens/s\n", load_seconds,
             r.first_token_seconds, tps);
  fmt::print("  memory (peak against budget; the CPU's includes the runtime's {}):\n",
             format_bytes(footprint));
  for (const DeviceReport& d : devices) {
    std::string reserves;
    for (const auto& [what, bytes] : d.reserves) {
      reserves += fmt::format("{}{} {}", reserves.empty() ? "" : ", ", what, format_bytes(bytes));
    }
    fmt::print("    {:<5} placed {:>10}  budget {:>10}  peak {:>10}{}{}\n", d.key,
               format_bytes(d.placed), d.budget ? format_bytes(*d.budget) : "-",
               format_bytes(d.peak), reserves.empty() ? "" : "  reserved: " + reserves,
               d.over ? "  OVER BUDGET" : "");
  }
  fmt::print("  {} thread(s), {}", threads, blas);
  if (prefetcher) {
    const dispatch::PrefetchStats st = prefetcher->stats();
    fmt::print(
        "\n  streamed {} from disk ({} I/O), {} to devices; prefetch {} ({} hits, {} waits, "
        "{} late, {} misses); staging peak: host {} of {}, device {} of {}",
        format_bytes(st.bytes_read), placement.io, format_bytes(st.bytes_to_device),
        prefetcher->options().lookahead ? "on" : "off", st.hits, st.waits, st.late, st.misses,
        format_bytes(st.peak_host_reserved_bytes), format_bytes(st.host_budget_bytes),
        format_bytes(st.peak_device_reserved_bytes), format_bytes(st.device_budget_bytes));
  }
  fmt::print("\n");
  if (!o.dump_logits.empty()) fmt::print("  prompt logits written to {}\n", o.dump_logits);
  return 0;
}

}  // namespace

void add_run_command(CLI::App& app, Runner& runner) {
  auto* cmd = app.add_subcommand(
      "run", "Generate text with a checkpoint folder (config.json + safetensors)");
  auto o = std::make_shared<RunOptions>();
  cmd->add_option("MODEL", o->model, "Model folder")->required();
  cmd->add_option("--prompt", o->prompts, "Prompt text (repeat for a batch)");
  cmd->add_option("--prompt-ids", o->prompt_ids,
                  "Prompt token ids, e.g. 1,2,3 (no tokenizer needed; repeat for a batch)");
  cmd->add_option("--dump-logits", o->dump_logits, "Write the prompt's logits (safetensors)");
  cmd->add_option("--temperature", o->sampling.temperature, "0 = greedy");
  cmd->add_option("--top-k", o->sampling.top_k, "Keep the k most likely tokens");
  cmd->add_option("--top-p", o->sampling.top_p, "Nucleus sampling mass");
  cmd->add_option("--repetition-penalty", o->sampling.repetition_penalty,
                  "> 1 discourages repeats");
  cmd->add_option("--seed", o->sampling.seed, "Sampling seed");
  cmd->add_option("--stop", o->stop, "Stop when the text contains this (repeatable)");
  cmd->add_flag("--ignore-eos", o->ignore_eos, "Do not stop at EOS");
  add_placement_flags(cmd, o->placement);
  cmd->add_flag("--json", o->json, "Print one JSON object");
  cmd->add_option("--threads", o->threads,
                  "CPU threads for compute (default and most: the CPUs this process may use)");
  cmd->add_flag("--no-progress", o->no_progress,
                "No progress bar while loading (drawn on stderr when it is a terminal)");
  cmd->callback([&runner, o, cmd] {
    // Only flags given are choices; generation_config.json decides the others.
    const auto given = [cmd](const char* flag) { return cmd->count(flag) > 0; };
    if (given("--temperature")) o->chosen.temperature = o->sampling.temperature;
    if (given("--top-k")) o->chosen.top_k = o->sampling.top_k;
    if (given("--top-p")) o->chosen.top_p = o->sampling.top_p;
    if (given("--repetition-penalty"))
      o->chosen.repetition_penalty = o->sampling.repetition_penalty;
    if (given("--seed")) o->chosen.seed = o->sampling.seed;
    runner = [o] { return run(*o); };
  });
}

}  // namespace ferry::cli
