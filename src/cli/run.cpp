// `ferry run MODEL --prompt TEXT`: loads a checkpoint folder under a device map (disk offload
// included), streams generated text, and reports load time, time to first token, tokens per
// second and peak memory per device.
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sched.h>
#include <thread>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/progress_bar.h"
#include "ferry/core/devices.h"
#include "ferry/core/error.h"
#include "ferry/core/log.h"
#include "ferry/core/memory.h"
#include "ferry/dispatch/prefetch.h"
#include "ferry/io/safetensors_writer.h"
#include "ferry/models/generate.h"
#include "ferry/models/registry.h"
#include "ferry/models/tokenizer.h"

namespace ferry::cli {
namespace {

struct RunOptions {
  std::string model;
  std::vector<std::string> prompts;
  std::string prompt_ids;  // "1,2,3"
  std::string dump_logits;
  std::int64_t max_new_tokens = 32;
  models::SamplingOptions sampling;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  std::string device_map = "auto";
  std::string max_memory;
  std::string offload_folder;
  std::string dtype;
  std::vector<std::string> no_split;
  bool json = false;
  bool no_progress = false;
  bool no_prefetch = false;
  std::string prefetch_bytes;  // "" = two of the largest layers
  std::string io = "direct";   // direct | buffered | mmap
  int threads = 0;             // 0 = every CPU this process may use
  int io_threads = 1;
  std::string compute_on = "main";  // main | weights
  std::int64_t rest_max_rows = 16;
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

int run(const RunOptions& o) {
  FERRY_CHECK(!o.prompts.empty() != !o.prompt_ids.empty(), InvalidArgument,
              "give either --prompt TEXT or --prompt-ids 1,2,3");
  const std::filesystem::path folder(o.model);
  std::optional<models::Tokenizer> tokenizer;
  if (!o.prompts.empty()) {
    tokenizer = models::Tokenizer::load(folder);
  } else if (std::filesystem::exists(folder / "tokenizer.json") ||
             std::filesystem::exists(folder / "tokenizer.model")) {
    // Only for showing the output: --prompt-ids works without a usable tokenizer.
    try {
      tokenizer = models::Tokenizer::load(folder);
    } catch (const Unsupported& e) {
      log_warning("{}; printing token ids instead of text", e.what());
    }
  }
  std::vector<std::vector<std::int64_t>> prompts;
  if (o.prompt_ids.empty()) {
    for (const auto& p : o.prompts) prompts.push_back(tokenizer->encode(p));
  } else {
    prompts.push_back(parse_ids(o.prompt_ids));
  }

  const int threads = o.threads > 0 ? o.threads : usable_cpus();
  at::set_num_threads(threads);
  const std::string blas = blas_in_use();
  if (blas.starts_with("reference"))
    log_warning(
        "LibTorch runs on the reference BLAS (about 30x slower than OpenBLAS): install "
        "libopenblas0-openmp");

  models::LoadModelOptions load;
  if (o.io == "mmap") {
    load.dispatch.prefetch.reset();  // Accelerate's way: each block read when it runs, via mmap
  } else {
    load.dispatch.prefetch->read_mode =
        o.io == "direct" ? io::ReadMode::Direct : io::ReadMode::Buffered;
    load.dispatch.prefetch->lookahead = !o.no_prefetch;
    load.dispatch.prefetch->threads = o.io_threads;
    if (!o.prefetch_bytes.empty()) {
      const std::uint64_t bytes = Bytes::parse(o.prefetch_bytes).value();
      load.dispatch.prefetch->host_budget_bytes = bytes;
      load.dispatch.prefetch->device_budget_bytes = bytes;
    }
  }
  if (o.compute_on == "weights") {
    load.dispatch.compute = {.where = dispatch::ComputePolicy::Where::kWeights,
                             .max_rows = o.rest_max_rows};
  }
  const bool is_file = o.device_map.ends_with(".json");
  if (is_file) {
    std::FILE* f = std::fopen(o.device_map.c_str(), "rb");
    FERRY_CHECK(f != nullptr, IoError, "--device-map: cannot read {}", o.device_map);
    std::string text;
    char buf[4096];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) text.append(buf, n);
    std::fclose(f);
    load.dispatch.device_map = plan::DeviceMap::from_json(text);
  } else {
    load.dispatch.device_map = plan::parse_strategy(o.device_map);
  }
  if (!o.max_memory.empty())
    load.dispatch.max_memory = plan::get_max_memory(plan::parse_budget_entries(o.max_memory));
  load.dispatch.offload_folder =
      o.offload_folder.empty()
          ? std::filesystem::temp_directory_path() / fmt::format("ferry-offload-{}", ::getpid())
          : std::filesystem::path(o.offload_folder);
  if (!o.dtype.empty()) load.dispatch.dtype = parse_dtype(o.dtype);
  load.dispatch.no_split_module_classes = o.no_split;
  const plan::MemoryBudget budget =
      load.dispatch.max_memory ? *load.dispatch.max_memory : plan::get_max_memory();

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
    fmt::print("  prompt: {} token(s)\n---\n", prompts.front().size());
    if (tokenizer && o.prompt_ids.empty()) fmt::print("{}", o.prompts.front());
    std::fflush(stdout);
  }

  models::GenerateOptions g{.max_new_tokens = o.max_new_tokens,
                            .sampling = o.sampling,
                            .stop_strings = o.stop,
                            .keep_prompt_logits = !o.dump_logits.empty()};
  if (!o.ignore_eos) {
    g.eos_token_ids = loaded.config.eos_token_ids;
    if (tokenizer && tokenizer->eos_token_id())
      g.eos_token_ids.push_back(*tokenizer->eos_token_id());
  }
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

  std::map<std::string, std::uint64_t> peak{{"cpu", peak_rss().value()}};
  for (int i = 0; i < simulated_gpu_count(); ++i)
    peak[std::to_string(i)] = sim_gpu_stats(i).peak.value();
  if (placed.contains("disk")) peak["disk"] = placed["disk"];
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
    j["threads"] = threads;
    j["blas"] = blas;
    j["io"] = o.io;
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
  fmt::print("  peak memory:");
  for (const auto& [where, bytes] : peak) {
    const auto b = budget.find(where == "cpu"    ? Placement::cpu()
                               : where == "disk" ? Placement::disk()
                                                 : Placement::gpu(std::stoi(where)));
    fmt::print(" {} {}{}", where, format_bytes(bytes),
               b ? fmt::format(" (budget {})", format_bytes(b->value())) : "");
  }
  fmt::print("\n  {} thread(s), {}", threads, blas);
  if (prefetcher) {
    const dispatch::PrefetchStats st = prefetcher->stats();
    fmt::print(
        "\n  streamed {} from disk ({} I/O), {} to devices; prefetch {} ({} hits, {} waits, "
        "{} late, {} misses); staging peak: host {} of {}, device {} of {}",
        format_bytes(st.bytes_read), o.io, format_bytes(st.bytes_to_device),
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
                  "Prompt token ids, e.g. 1,2,3 (no tokenizer needed)");
  cmd->add_option("--dump-logits", o->dump_logits, "Write the prompt's logits (safetensors)");
  cmd->add_option("--max-new-tokens", o->max_new_tokens, "Tokens to generate");
  cmd->add_option("--temperature", o->sampling.temperature, "0 = greedy");
  cmd->add_option("--top-k", o->sampling.top_k, "Keep the k most likely tokens");
  cmd->add_option("--top-p", o->sampling.top_p, "Nucleus sampling mass");
  cmd->add_option("--repetition-penalty", o->sampling.repetition_penalty,
                  "> 1 discourages repeats");
  cmd->add_option("--seed", o->sampling.seed, "Sampling seed");
  cmd->add_option("--stop", o->stop, "Stop when the text contains this (repeatable)");
  cmd->add_flag("--ignore-eos", o->ignore_eos, "Do not stop at EOS");
  cmd->add_option("--device-map", o->device_map,
                  "auto|balanced|balanced_low_0|sequential|FILE.json");
  cmd->add_option("--max-memory", o->max_memory, "Budgets, e.g. 0=20GiB,cpu=2GiB");
  cmd->add_option("--offload-folder", o->offload_folder,
                  "Where disk-offloaded weights are indexed");
  cmd->add_option("--dtype", o->dtype, "Convert floating weights (float32, bfloat16, float16)");
  cmd->add_option("--no-split", o->no_split, "Extra module classes never split");
  cmd->add_flag("--json", o->json, "Print one JSON object");
  cmd->add_flag("--no-prefetch", o->no_prefetch,
                "Load each offloaded block when it runs instead of ahead of need");
  cmd->add_option("--prefetch-bytes", o->prefetch_bytes,
                  "Staging memory for streamed blocks, counted in the budgets (default: two of "
                  "the largest layers)");
  cmd->add_option("--io", o->io,
                  "How disk-offloaded weights are read: direct (O_DIRECT where the file system "
                  "allows), buffered (page cache), mmap (Accelerate's way, no prefetch)")
      ->check(CLI::IsMember({"direct", "buffered", "mmap"}));
  cmd->add_option("--compute-on", o->compute_on,
                  "Where CPU-resident blocks run when a GPU is the main device: main (stream "
                  "their weights to it) or weights (run them on the CPU for small batches)")
      ->check(CLI::IsMember({"main", "weights"}));
  cmd->add_option("--rest-max-rows", o->rest_max_rows,
                  "With --compute-on weights: largest batch x tokens computed on the CPU");
  cmd->add_option("--io-threads", o->io_threads, "Loader threads of the prefetcher")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--threads", o->threads, "CPU threads for compute (default: all usable CPUs)");
  cmd->add_flag("--no-progress", o->no_progress,
                "No progress bar while loading (drawn on stderr when it is a terminal)");
  cmd->callback([&runner, o] { runner = [o] { return run(*o); }; });
}

}  // namespace ferry::cli
