#include "ferry/models/pretrained.h"

#include <fmt/format.h>

#include <algorithm>

#include "ferry/core/dtype.h"
#include "ferry/core/error.h"
#include "ferry/plan/memory_budget.h"
#include "ferry/plan/strategy.h"

namespace ferry::models {
namespace {

// The placement a device_map string asks for: a planning strategy, or everything in RAM.
std::variant<std::monostate, plan::Strategy, plan::DeviceMap> device_map_of(std::string_view text) {
  if (text == "cpu") return plan::DeviceMap{{"", Placement::cpu()}};
  for (const plan::Strategy s : {plan::Strategy::kAuto, plan::Strategy::kBalanced,
                                 plan::Strategy::kBalancedLow0, plan::Strategy::kSequential}) {
    if (text == plan::to_string(s)) return s;
  }
  throw InvalidArgument(
      fmt::format("device_map '{}' is not supported: expected 'auto', 'balanced', "
                  "'balanced_low_0', 'sequential' or 'cpu'",
                  text),
      ErrorFields{.path = "device_map",
                  .expected = "auto, balanced, balanced_low_0, sequential or cpu",
                  .actual = std::string(text)});
}

}  // namespace

Pretrained::Pretrained(LoadedModel loaded, Tokenizer tokenizer)
    : loaded_(std::move(loaded)), tokenizer_(std::move(tokenizer)) {}

std::string Pretrained::generate(std::string_view prompt, const GenerationChoices& options) {
  GenerateOptions g = resolve_generate_options(loaded_.generation, options);
  const std::optional<std::int64_t> tokenizer_eos = tokenizer_->eos_token_id();
  if (!options.eos_token_ids && tokenizer_eos &&
      std::find(g.eos_token_ids.begin(), g.eos_token_ids.end(), *tokenizer_eos) ==
          g.eos_token_ids.end()) {
    g.eos_token_ids.push_back(*tokenizer_eos);
  }
  if (!g.stop_strings.empty()) {
    g.decode = [this](const std::vector<std::int64_t>& ids) {
      return tokenizer_->decode(ids, /*skip_special_tokens=*/true);
    };
  }
  const GenerateResult result = models::generate(*loaded_.model, {tokenizer_->encode(prompt)}, g);
  return tokenizer_->decode(result.tokens.front(), /*skip_special_tokens=*/true);
}

Pretrained load_pretrained(const std::filesystem::path& folder, const PretrainedOptions& options) {
  LoadModelOptions load;
  load.dispatch.device_map = device_map_of(options.device_map);
  if (!options.max_memory.empty()) {
    load.dispatch.max_memory = plan::MemoryBudget::parse(options.max_memory);
  }
  load.dispatch.offload_folder = options.offload_folder;
  if (!options.dtype.empty()) load.compute_dtype = parse_compute_dtype(options.dtype);
  load.quantize = options.quantize;
  load.shape.context = options.context;
  load.shape.max_new_tokens = options.max_new_tokens;
  // The tokenizer first: a folder without one fails before minutes of loading.
  Tokenizer tokenizer = Tokenizer::load(folder, load_config(folder).vocab_size);
  LoadedModel loaded = load_model(folder, load);
  return Pretrained(std::move(loaded), std::move(tokenizer));
}

}  // namespace ferry::models
