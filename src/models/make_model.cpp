#include "ferry/models/make_model.h"

#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include <map>

#include "ferry/core/error.h"
#include "ferry/io/sharded.h"
#include "ferry/models/registry.h"
#include "ferry/nn/init.h"
#include "io/json_file.h"
#include "models/architecture.h"
#include "models/byte_level.h"

namespace ferry::models {
namespace {

using Json = nlohmann::ordered_json;

// Text the synthetic tokenizer learns its merges from: common English, so prompts in English
// get multi-byte tokens.
constexpr std::string_view kCorpus =
    "The quick brown fox jumps over the lazy dog. Once upon a time there was a little model that "
    "was far too big for the memory of the machine it ran on. It kept some of its layers on the "
    "disk and the others in memory, and it moved each one to where the computation happened just "
    "before it was needed. The people who used it were happy, because they could run the model "
    "they wanted on the computer they had. This is the story of that model and of the things it "
    "said when they asked it questions about the world, about the weather, and about what it "
    "would like to do in the future. It said that it would like to be faster and smaller.";

// The make-model recipe of `arch`; throws InvalidArgument listing those that have one.
const detail::MakeRecipe& recipe(const std::string& arch) {
  const std::shared_ptr<const detail::Architecture> a = detail::find_architecture(arch);
  if (!a || !a->make) {
    throw InvalidArgument(
        fmt::format("make-model: arch '{}' is not supported ({})", arch,
                    fmt::join(make_model_architectures(), ", ")),
        ErrorFields{.path = "arch",
                    .expected = fmt::format("{}", fmt::join(make_model_architectures(), ", ")),
                    .actual = arch});
  }
  return *a->make;  // architectures are never removed: the reference stays valid
}

// Dimensions for about `target` bytes: the widest hidden size (head_dim 64) that still gives
// at least 8 layers.
void choose_dims(MakeModelOptions& o, const Bytes target) {
  const std::uint64_t e = static_cast<std::uint64_t>(element_size(o.dtype));
  const double per_h2 = recipe(o.arch).layer_elements_per_hidden2;
  std::int64_t chosen = 64;
  for (std::int64_t h : {64, 128, 256, 512, 768, 1024, 1536, 2048, 3072, 4096, 5120, 8192}) {
    const double per_layer = per_h2 * static_cast<double>(h * h) * static_cast<double>(e);
    if (static_cast<double>(target.value()) / per_layer >= 8) chosen = h;
  }
  const double per_layer = per_h2 * static_cast<double>(chosen * chosen) * static_cast<double>(e);
  if (o.hidden_size == 0) o.hidden_size = chosen;
  if (o.n_layers == 0) {
    o.n_layers = std::max<std::int64_t>(
        1, static_cast<std::int64_t>(static_cast<double>(target.value()) / per_layer));
  }
}

ModelConfig config_for(MakeModelOptions o, std::int64_t vocab_size) {
  const detail::MakeRecipe& make = recipe(o.arch);
  if (o.target_size) choose_dims(o, *o.target_size);
  if (o.hidden_size == 0) o.hidden_size = 64;
  if (o.n_layers == 0) o.n_layers = 2;
  if (o.n_heads == 0) o.n_heads = std::max<std::int64_t>(1, o.hidden_size / 64);
  if (o.n_kv_heads == 0) o.n_kv_heads = o.n_heads % 4 == 0 ? o.n_heads / 4 : o.n_heads;
  FERRY_CHECK(o.hidden_size % o.n_heads == 0 && (o.hidden_size / o.n_heads) % 2 == 0,
              InvalidArgument,
              "make-model: {} heads must divide hidden size {} into even head sizes", o.n_heads,
              o.hidden_size);
  FERRY_CHECK(o.n_heads % o.n_kv_heads == 0, InvalidArgument,
              "make-model: {} key/value heads must divide {} heads", o.n_kv_heads, o.n_heads);
  ModelConfig c;
  c.model_type = o.arch;
  c.vocab_size = vocab_size;
  c.hidden_size = o.hidden_size;
  c.n_layers = o.n_layers;
  c.n_heads = o.n_heads;
  c.n_kv_heads = o.n_kv_heads;
  c.head_dim = o.hidden_size / o.n_heads;
  c.torch_dtype = std::string(torch_name(o.dtype));
  make.configure(o, c);
  return c;
}

}  // namespace

std::string make_tokenizer_json(const std::string& arch, int n_merges) {
  // Learn merges: count adjacent symbol pairs over the corpus' pre-tokenized words, merge the
  // most frequent (ties: the smallest pair), repeat.
  const detail::Regex regex(detail::kGpt2Pattern);
  std::map<std::vector<std::string>, std::int64_t> words;
  for (const std::string& w : regex.split(kCorpus))
    ++words[detail::utf8_chars(detail::bytes_to_printable(w))];
  Json vocab = Json::object();
  std::int64_t next_id = 0;
  for (int b = 0; b < 256; ++b)
    vocab[detail::bytes_to_printable(std::string(1, static_cast<char>(b)))] = next_id++;
  Json merges = Json::array();
  for (int m = 0; m < n_merges; ++m) {
    std::map<std::pair<std::string, std::string>, std::int64_t> pairs;
    for (const auto& [symbols, count] : words) {
      for (std::size_t i = 0; i + 1 < symbols.size(); ++i)
        pairs[{symbols[i], symbols[i + 1]}] += count;
    }
    if (pairs.empty()) break;
    auto best = pairs.begin();
    for (auto it = pairs.begin(); it != pairs.end(); ++it) {
      if (it->second > best->second) best = it;
    }
    const auto [left, right] = best->first;
    merges.push_back(left + " " + right);
    if (!vocab.contains(left + right)) vocab[left + right] = next_id++;
    std::map<std::vector<std::string>, std::int64_t> merged;
    for (const auto& [symbols, count] : words)
      merged[detail::bpe(symbols, {{left + " " + right, 0}})] += count;
    words = std::move(merged);
  }
  Json added = Json::array();
  for (const std::string& s : recipe(arch).special_tokens) {
    added.push_back({{"id", next_id},
                     {"content", s},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
    vocab[s] = next_id++;
  }
  Json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "ByteLevel"},
                        {"add_prefix_space", false},
                        {"trim_offsets", true},
                        {"use_regex", true}};
  j["post_processor"] = nullptr;
  j["decoder"] = {{"type", "ByteLevel"},
                  {"add_prefix_space", true},
                  {"trim_offsets", true},
                  {"use_regex", true}};
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"vocab", vocab},
                {"merges", merges}};
  return j.dump(2) + "\n";
}

MadeModel make_model(const std::filesystem::path& folder, const MakeModelOptions& options) {
  const std::string tokenizer = make_tokenizer_json(options.arch, options.n_merges);
  const auto token_count =
      static_cast<std::int64_t>(Json::parse(tokenizer).at("model").at("vocab").size());
  MadeModel made;
  // The embedding table rounded up to a multiple of 64 rows, as real checkpoints often are.
  made.config = config_for(options, (token_count + 63) / 64 * 64);
  ModelConfig& c = made.config;
  // Special tokens sit at the end of the tokenizer; ids in the config must name them.
  const std::int64_t first_special =
      token_count - static_cast<std::int64_t>(recipe(options.arch).special_tokens.size());
  c.bos_token_id = first_special;
  c.eos_token_ids = {token_count - 1};

  std::shared_ptr<CausalLM> model;
  {
    nn::InitEmptyWeights guard;
    model = create_model(c, require_scalar_type(options.dtype));
  }
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  const auto parameters = model->module().named_parameters();
  const std::uint64_t element_bytes = static_cast<std::uint64_t>(element_size(options.dtype));
  std::uint64_t total_bytes = 0;
  for (const auto& t : parameters) total_bytes += static_cast<std::uint64_t>(t.tensor().numel());
  total_bytes *= element_bytes;
  for (const auto& t : parameters) {
    const bool is_norm =
        t.name.find("norm") != std::string::npos || t.name.find("ln_") != std::string::npos;
    const bool is_bias = t.name.ends_with(".bias");
    at::Tensor w = at::normal(0.0, 1.0, t.tensor().sizes(), gen, at::kFloat);
    // Norm weights near 1 (and not exactly 1, so a reference that skips them would differ).
    w = is_norm && !is_bias ? 1.0 + 0.1 * w : 0.02 * w;
    tensors.emplace_back(t.name, w.to(require_scalar_type(options.dtype)));
    made.n_parameters += static_cast<std::uint64_t>(w.numel());
    if (options.progress) {
      options.progress({.phase = "generating",
                        .bytes_done = made.n_parameters * element_bytes,
                        .bytes_total = total_bytes});
    }
  }
  made.size = Bytes(made.n_parameters * static_cast<std::uint64_t>(element_size(options.dtype)));
  std::filesystem::create_directories(folder);
  io::ShardOptions shards{.max_shard_size = options.max_shard_size};
  if (options.progress) {
    shards.progress = [&options](std::uint64_t done, std::uint64_t total) {
      options.progress({.phase = "writing", .bytes_done = done, .bytes_total = total});
    };
  }
  io::save_sharded(folder, tensors, shards);
  io::write_text_file(folder / "config.json", config_to_json(c));
  io::write_text_file(folder / "tokenizer.json", tokenizer);
  const auto& names = recipe(options.arch).special_tokens;
  const Json tokenizer_config{{"add_bos_token", recipe(options.arch).add_bos_token},
                              {"add_eos_token", false},
                              {"bos_token", names.front()},
                              {"eos_token", names.back()},
                              {"model_max_length", c.max_position_embeddings}};
  io::write_text_file(folder / "tokenizer_config.json", tokenizer_config.dump(2) + "\n");
  return made;
}

}  // namespace ferry::models
