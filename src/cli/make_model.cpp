// `ferry make-model --arch llama|gpt2|... (--size 1.5GB | --hidden N --layers N ...) --out DIR`:
// a synthetic checkpoint folder with random weights and a working tokenizer.
#include "ferry/models/make_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>

#include "cli/commands.h"
#include "cli/json_output.h"
#include "cli/paths.h"
#include "cli/progress_bar.h"
#include "cli/sizes.h"
#include "ferry/core/dtype.h"
#include "ferry/core/error.h"
#include "ferry/models/registry.h"

namespace ferry::cli {
namespace {

namespace fs = std::filesystem;

struct MakeModelFlags {
  models::MakeModelOptions options;
  std::string out;
  std::string size;
  std::string dtype = "float32";
  std::string shard = "200MB";
  bool force = false;
  bool json = false;
  bool no_progress = false;
};

bool is_model_file(const fs::path& file) {
  const std::string name = file.filename().string();
  return name == "config.json" || name.ends_with(".safetensors") ||
         name.ends_with(".safetensors.index.json");
}

// The files of a model in `folder` (config.json, safetensors shards and indexes), sorted.
std::vector<fs::path> model_files(const fs::path& folder) {
  std::vector<fs::path> found;
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) return found;
  for (const fs::directory_entry& e : fs::directory_iterator(folder)) {
    if (is_model_file(e.path())) found.push_back(e.path());
  }
  std::sort(found.begin(), found.end());
  return found;
}

int make(const MakeModelFlags& f) {
  models::MakeModelOptions o = f.options;
  // Every flag is checked before anything is written.
  if (!f.size.empty()) o.target_size = parse_size_flag("--size", f.size, /*warn=*/true);
  o.dtype = parse_dtype(f.dtype);
  o.max_shard_size = parse_size_flag("--max-shard-size", f.shard, /*warn=*/true);
  const fs::path out(f.out);
  require_output_folder("--out", out);
  const std::vector<fs::path> old = model_files(out);
  if (!old.empty() && !f.force) {
    throw InvalidArgument(
        fmt::format("--out {} holds a model already ({}{}): pass --force to replace it, or "
                    "choose another folder",
                    out.string(), old.front().filename().string(),
                    old.size() > 1 ? fmt::format(" and {} more file(s)", old.size() - 1) : ""),
        ErrorFields{.file = out.string(),
                    .expected = "an empty or new folder (or --force)",
                    .actual = fmt::format("{} model file(s)", old.size())});
  }
  // Shards of the old model that the new one would not overwrite would otherwise stay and be
  // listed by a later inspect (a folder with two models in it).
  for (const fs::path& file : old) {
    if (file.filename() != "config.json") fs::remove(file);
  }

  std::optional<ProgressBar> bar;
  if (!f.json && !f.no_progress && is_terminal(stderr)) {
    bar.emplace(stderr);
    o.progress = [&bar](const models::MakeModelProgress& p) {
      bar->update(p.phase, p.bytes_done, p.bytes_total);
    };
  }
  const auto start = std::chrono::steady_clock::now();
  const models::MadeModel made = models::make_model(out, o);
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  bar.reset();
  const models::ModelConfig& c = made.config;
  if (f.json) {
    nlohmann::ordered_json j = json_header("make-model");
    j["path"] = out.string();
    j["model_type"] = c.model_type;
    j["parameters"] = made.n_parameters;
    j["size_bytes"] = made.size.value();
    j["dtype"] = c.torch_dtype;
    j["hidden_size"] = c.hidden_size;
    j["layers"] = c.n_layers;
    j["heads"] = c.n_heads;
    j["kv_heads"] = c.n_kv_heads;
    j["intermediate_size"] = c.intermediate_size;
    j["vocab_size"] = c.vocab_size;
    nlohmann::ordered_json files = nlohmann::ordered_json::array();
    for (const fs::path& file : model_files(out)) files.push_back(file.filename().string());
    j["files"] = files;
    j["replaced_files"] = old.size();
    j["seconds"] = elapsed;
    print_json(j);
    return 0;
  }
  fmt::print("ferry make-model: {} in {} ({:.1f} s){}\n", c.model_type, out.string(), elapsed,
             old.empty() ? "" : fmt::format("; {} old model file(s) replaced", old.size()));
  fmt::print("  {} parameters ({}), {} as {}\n", format_count(made.n_parameters),
             made.n_parameters, format_bytes(made.size.value()), c.torch_dtype);
  fmt::print("  hidden {}, layers {}, heads {} (kv {}), intermediate {}, vocab {}\n",
             c.hidden_size, c.n_layers, c.n_heads, c.n_kv_heads, c.intermediate_size,
             c.vocab_size);
  return 0;
}

}  // namespace

void add_make_model_command(CLI::App& app, Runner& runner) {
  auto* cmd =
      app.add_subcommand("make-model", std::string(kMakeModelDescription));
  auto f = std::make_shared<MakeModelFlags>();
  models::MakeModelOptions& o = f->options;
  const std::vector<std::string> archs = models::make_model_architectures();
  cmd->add_option("--arch", o.arch, fmt::format("{}", fmt::join(archs, ", ")))
      ->check(CLI::IsMember(archs));
  cmd->add_option("--size", f->size,
                  "Approximate size of the weights (e.g. 1.5GB); picks dimensions");
  cmd->add_option("--hidden", o.hidden_size, "Hidden size");
  cmd->add_option("--layers", o.n_layers, "Decoder layers");
  cmd->add_option("--heads", o.n_heads, "Attention heads");
  cmd->add_option("--kv-heads", o.n_kv_heads, "Key/value heads (llama)");
  cmd->add_option("--intermediate", o.intermediate_size, "MLP hidden size");
  cmd->add_option("--max-positions", o.max_position_embeddings, "Maximum positions");
  cmd->add_flag("--tie", o.tie_word_embeddings, "Tie lm_head to the embedding (llama)");
  cmd->add_option("--rope-scaling", o.rope_scaling, "linear or llama3 (llama)");
  cmd->add_flag("--attention-bias", o.attention_bias, "Biases on q/k/v/o (llama)");
  cmd->add_flag("--mlp-bias", o.mlp_bias, "Biases in the MLP (llama)");
  cmd->add_option("--merges", o.n_merges, "BPE merges of the tokenizer");
  cmd->add_option("--dtype", f->dtype, "Stored dtype (float32, bfloat16, float16)");
  cmd->add_option("--seed", o.seed, "Random seed of the weights");
  cmd->add_option("--max-shard-size", f->shard, "Largest shard file");
  cmd->add_option("--out", f->out, "Folder to write")->required();
  cmd->add_flag("--force", f->force,
                "Replace the model in --out (its safetensors shards and index are removed)");
  cmd->add_flag("--json", f->json, "Print one JSON object (docs/cli.md)");
  cmd->add_flag("--no-progress", f->no_progress,
                "No progress bar (drawn on stderr when it is a terminal)");
  cmd->callback([&runner, f] { runner = [f] { return make(*f); }; });
}

}  // namespace ferry::cli
