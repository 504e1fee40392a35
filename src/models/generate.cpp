#include "ferry/models/generate.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>

#include "ferry/core/error.h"
#include "ferry/kernels/linear.h"
#include "ferry/models/registry.h"

namespace ferry::models {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void check_prompts(const ModelConfig& c, const std::vector<std::vector<std::int64_t>>& prompts) {
  FERRY_CHECK(!prompts.empty(), InvalidArgument, "generate: no prompt given");
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    FERRY_CHECK(!prompts[i].empty(), InvalidArgument, "generate: prompt {} is empty", i);
    for (std::int64_t id : prompts[i]) {
      FERRY_CHECK(id >= 0 && id < c.vocab_size, InvalidArgument,
                  "prompt {}: token id {} is outside the vocabulary [0, {}) of {}", i, id,
                  c.vocab_size, c.file.string());
    }
    if (static_cast<std::int64_t>(prompts[i].size()) > c.max_position_embeddings) {
      const std::string field = checkpoint_layout(c).positions_field;
      throw InvalidArgument(
          fmt::format("prompt {} has {} tokens, more than the model's {} = {} in {}", i,
                      prompts[i].size(), field, c.max_position_embeddings, c.file.string()),
          ErrorFields{.path = field,
                      .file = c.file.string(),
                      .expected = fmt::format("<= {}", c.max_position_embeddings),
                      .actual = std::to_string(prompts[i].size())});
    }
  }
}

// Note [Inference mode]
// ~~~~~~~~~~~~~~~~~~~~~
// A decode step makes a few hundred small LibTorch calls (views, adds, the cache's copies) around
// its products, and under a NoGradGuard each still passes LibTorch's autograd layer and gives
// every view its autograd record. c10::InferenceMode skips both: perf put the calling thread's
// samples in libtorch_cpu and libc10 at 11.3-11.9 % of a bfloat16 decode with the guard, 9.6-9.9 %
// in inference mode. Tensors made in it (the KV cache, the logits) are inference tensors: they
// cannot be changed in place, or recorded by autograd, outside inference mode. Of what generate()
// returns only prompt_logits is a tensor, and it is for reading (clone() it to change it).

}  // namespace

GenerateResult generate(CausalLM& model, const std::vector<std::vector<std::int64_t>>& prompts,
                        const GenerateOptions& options) {
  const ModelConfig& c = model.config();
  check_prompts(c, prompts);
  FERRY_CHECK(options.stop_strings.empty() || options.decode, InvalidArgument,
              "generate: stop strings need a decode function");
  // Note [Inference mode]
  const c10::InferenceMode inference;
  const auto batch = static_cast<std::int64_t>(prompts.size());
  StepInput prefill = left_padded_prefill(prompts, options.pad_token_id);
  at::Tensor ids = prefill.input_ids;
  at::Tensor mask = prefill.attention_mask;
  const at::Tensor positions = prefill.position_ids;
  std::vector<std::vector<std::int64_t>> seen = prompts;

  GenerateResult result;
  result.tokens.resize(prompts.size());
  result.finish_reasons.assign(prompts.size(), "length");
  std::vector<bool> done(prompts.size(), options.max_new_tokens <= 0);
  KvCache cache(static_cast<std::size_t>(c.n_layers));
  // The most positions this run holds: the prompt's padded width and every new token.
  cache.set_max_positions(ids.size(1) + std::max<std::int64_t>(options.max_new_tokens, 0));
  Sampler sampler(options.sampling);
  at::Tensor next_positions = positions.narrow(1, positions.size(1) - 1, 1) + 1;

  const auto start = Clock::now();
  kernels::ProductStats decode_start;
  at::Tensor logits =
      model.step({.input_ids = ids, .position_ids = positions, .attention_mask = mask}, cache);
  if (options.keep_prompt_logits) result.prompt_logits = logits;
  for (std::int64_t step = 0; step < options.max_new_tokens; ++step) {
    if (step > 0) {
      // Tokens of finished rows are fed (and ignored); the batch keeps its shape.
      logits = model.step(
          {.input_ids = ids, .position_ids = next_positions, .attention_mask = mask}, cache);
      next_positions = next_positions + 1;
    }
    const at::Tensor chosen = sampler.next(logits.select(1, logits.size(1) - 1), seen);
    if (step == 0) {
      result.first_token_seconds = seconds_since(start);
      decode_start = kernels::product_stats();
    } else {
      ++result.decode_steps;
    }
    const auto chosen_ids = chosen.accessor<std::int64_t, 1>();
    for (std::size_t b = 0; b < prompts.size(); ++b) {
      if (done[b]) continue;
      const std::int64_t token = chosen_ids[static_cast<std::int64_t>(b)];
      result.tokens[b].push_back(token);
      seen[b].push_back(token);
      if (options.on_token) options.on_token(b, token);
      if (std::find(options.eos_token_ids.begin(), options.eos_token_ids.end(), token) !=
          options.eos_token_ids.end()) {
        done[b] = true;
        result.finish_reasons[b] = "eos";
      } else if (!options.stop_strings.empty()) {
        const std::string text = options.decode(result.tokens[b]);
        for (const auto& s : options.stop_strings) {
          if (!s.empty() && text.find(s) != std::string::npos) {
            done[b] = true;
            result.finish_reasons[b] = "stop_string";
          }
        }
      }
    }
    if (std::all_of(done.begin(), done.end(), [](bool d) { return d; })) break;
    if (next_positions.max().item<std::int64_t>() >= c.max_position_embeddings) {
      for (std::size_t b = 0; b < prompts.size(); ++b) {
        if (!done[b]) result.finish_reasons[b] = "max_positions";
      }
      break;
    }
    ids = chosen.unsqueeze(1);
    mask = at::cat({mask, at::ones({batch, 1}, at::kLong)}, 1);
  }
  result.decode_seconds = seconds_since(start) - result.first_token_seconds;
  if (result.decode_steps > 0) {
    const kernels::ProductStats products = kernels::product_stats() - decode_start;
    result.decode_product_seconds = products.seconds;
    result.decode_product_calls = products.calls;
    result.decode_product_bytes = products.weight_bytes;
  }
  return result;
}

StepInput left_padded_prefill(const std::vector<std::vector<std::int64_t>>& prompts,
                              std::int64_t pad_token_id) {
  const auto batch = static_cast<std::int64_t>(prompts.size());
  std::int64_t longest = 0;
  for (const auto& p : prompts)
    longest = std::max<std::int64_t>(longest, static_cast<std::int64_t>(p.size()));
  StepInput in{.input_ids = at::full({batch, longest}, pad_token_id, at::kLong),
               .position_ids = at::zeros({batch, longest}, at::kLong),
               .attention_mask = at::zeros({batch, longest}, at::kLong)};
  for (std::int64_t b = 0; b < batch; ++b) {
    const auto& p = prompts[static_cast<std::size_t>(b)];
    const auto n = static_cast<std::int64_t>(p.size());
    in.input_ids[b].narrow(0, longest - n, n).copy_(at::tensor(p, at::kLong));
    in.attention_mask[b].narrow(0, longest - n, n).fill_(1);
    in.position_ids[b].narrow(0, longest - n, n).copy_(at::arange(n, at::kLong));
  }
  return in;
}

GenerateOptions resolve_generate_options(const GenerationConfig& model,
                                         const GenerationChoices& chosen) {
  GenerateOptions out;
  out.max_new_tokens = resolve_max_new_tokens(model, chosen.max_new_tokens);
  // transformers samples only with do_sample; ferry's own switch is a temperature above 0. A
  // chosen temperature alone therefore decides (as `ferry run --temperature 0.7` always has),
  // and a chosen do_sample decides over anything the model's file says.
  const bool sample = chosen.do_sample.value_or(
      chosen.temperature ? *chosen.temperature > 0 : model.do_sample.value_or(false));
  SamplingOptions& s = out.sampling;
  s.temperature = sample ? chosen.temperature.value_or(model.temperature.value_or(1.0)) : 0.0;
  s.top_k = chosen.top_k.value_or(model.top_k.value_or(s.top_k));
  s.top_p = chosen.top_p.value_or(model.top_p.value_or(s.top_p));
  s.min_p = chosen.min_p.value_or(model.min_p.value_or(s.min_p));
  s.repetition_penalty =
      chosen.repetition_penalty.value_or(model.repetition_penalty.value_or(s.repetition_penalty));
  s.seed = chosen.seed.value_or(s.seed);
  out.eos_token_ids = chosen.eos_token_ids.value_or(model.eos_token_ids);
  out.stop_strings = chosen.stop_strings;
  if (model.pad_token_id) out.pad_token_id = *model.pad_token_id;
  return out;
}

}  // namespace ferry::models
