// `ferry make-model --arch llama|gpt2|... (--size 1.5GB | --hidden N --layers N ...) --out DIR`:
// a synthetic checkpoint folder with random weights and a working tokenizer.
#include "ferry/models/make_model.h"

#include <fmt/format.h>

#include <chrono>

#include "cli/commands.h"
#include "ferry/models/registry.h"

namespace ferry::cli {

void add_make_model_command(CLI::App& app, Runner& runner) {
  auto* cmd =
      app.add_subcommand("make-model", "Write a synthetic checkpoint folder (random weights)");
  auto options = std::make_shared<models::MakeModelOptions>();
  auto out = std::make_shared<std::string>();
  auto size = std::make_shared<std::string>();
  auto dtype = std::make_shared<std::string>("float32");
  auto shard = std::make_shared<std::string>("200MB");
  const std::vector<std::string> archs = models::make_model_architectures();
  cmd->add_option("--arch", options->arch, fmt::format("{}", fmt::join(archs, ", ")))
      ->check(CLI::IsMember(archs));
  cmd->add_option("--size", *size,
                  "Approximate size of the weights (e.g. 1.5GB); picks dimensions");
  cmd->add_option("--hidden", options->hidden_size, "Hidden size");
  cmd->add_option("--layers", options->n_layers, "Decoder layers");
  cmd->add_option("--heads", options->n_heads, "Attention heads");
  cmd->add_option("--kv-heads", options->n_kv_heads, "Key/value heads (llama)");
  cmd->add_option("--intermediate", options->intermediate_size, "MLP hidden size");
  cmd->add_option("--max-positions", options->max_position_embeddings, "Maximum positions");
  cmd->add_flag("--tie", options->tie_word_embeddings, "Tie lm_head to the embedding (llama)");
  cmd->add_option("--rope-scaling", options->rope_scaling, "linear or llama3 (llama)");
  cmd->add_flag("--attention-bias", options->attention_bias, "Biases on q/k/v/o (llama)");
  cmd->add_flag("--mlp-bias", options->mlp_bias, "Biases in the MLP (llama)");
  cmd->add_option("--merges", options->n_merges, "BPE merges of the tokenizer");
  cmd->add_option("--dtype", *dtype, "Stored dtype (float32, bfloat16, float16)");
  cmd->add_option("--seed", options->seed, "Random seed of the weights");
  cmd->add_option("--max-shard-size", *shard, "Largest shard file");
  cmd->add_option("--out", *out, "Folder to write")->required();
  cmd->callback([&runner, options, out, size, dtype, shard] {
    runner = [options, out, size, dtype, shard] {
      models::MakeModelOptions o = *options;
      if (!size->empty()) o.target_size = Bytes::parse(*size);
      o.dtype = parse_dtype(*dtype);
      o.max_shard_size = Bytes::parse(*shard);
      const auto start = std::chrono::steady_clock::now();
      const models::MadeModel made = models::make_model(*out, o);
      const models::ModelConfig& c = made.config;
      fmt::print("ferry make-model: {} in {} ({:.1f} s)\n", c.model_type, *out,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      fmt::print("  {} parameters, {} as {}\n", made.n_parameters, format_bytes(made.size.value()),
                 c.torch_dtype);
      fmt::print("  hidden {}, layers {}, heads {} (kv {}), intermediate {}, vocab {}\n",
                 c.hidden_size, c.n_layers, c.n_heads, c.n_kv_heads, c.intermediate_size,
                 c.vocab_size);
      return 0;
    };
  });
}

}  // namespace ferry::cli
