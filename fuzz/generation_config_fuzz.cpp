// libFuzzer target: generation_config.json parsing on arbitrary text. Only ferry::Error may
// escape; a file that parses has every value within the documented limits, and resolving it
// gives options the sampler accepts.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ferry/core/error.h"
#include "ferry/models/generation_config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ferry::models;
  GenerationConfig g;
  try {
    g = parse_generation_config(std::string_view(reinterpret_cast<const char*>(data), size),
                                "fuzz/generation_config.json");
  } catch (const ferry::Error&) {
    return 0;
  }
  bool ok = g.eos_token_ids.size() <= kMaxEosTokenIds;
  for (const std::int64_t id : g.eos_token_ids) ok = ok && id >= 0 && id < (std::int64_t{1} << 31);
  ok = ok && (!g.max_new_tokens || (*g.max_new_tokens >= 0 && *g.max_new_tokens <= kMaxPositions));
  ok = ok && (!g.temperature || (std::isfinite(*g.temperature) && *g.temperature >= 0));
  ok = ok && (!g.top_k || (*g.top_k >= 0 && *g.top_k <= kMaxVocabSize));
  ok = ok && (!g.top_p || (*g.top_p > 0 && *g.top_p <= 1));
  ok = ok && (!g.repetition_penalty ||
              (std::isfinite(*g.repetition_penalty) && *g.repetition_penalty > 0));
  ok = ok && resolve_max_new_tokens(g, std::nullopt) >= 0;
  if (!ok) __builtin_trap();
  return 0;
}
