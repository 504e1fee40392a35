// libFuzzer target: config.json parsing on arbitrary text. Only ferry::Error may escape; a config
// that parses is within the documented limits and survives a round trip through config_to_json.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ferry/core/error.h"
#include "ferry/models/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ferry::models;
  ModelConfig config;
  try {
    config = parse_config(std::string_view(reinterpret_cast<const char*>(data), size),
                          "fuzz/config.json");
  } catch (const ferry::Error&) {
    return 0;
  }
  const bool in_limits = config.vocab_size > 0 && config.vocab_size <= kMaxVocabSize &&
                         config.n_layers > 0 && config.n_layers <= kMaxDimension &&
                         config.hidden_size > 0 && config.hidden_size <= kMaxDimension &&
                         config.n_kv_heads > 0 && config.n_heads % config.n_kv_heads == 0 &&
                         config.norm_eps > 0 && config.rope_theta > 0;
  if (!in_limits) __builtin_trap();
  // What make-model writes must read back: a failure here is a bug in one of the two.
  const ModelConfig back = parse_config(config_to_json(config), "fuzz/round-trip.json");
  if (back.vocab_size != config.vocab_size || back.n_layers != config.n_layers ||
      back.head_dim != config.head_dim || back.n_kv_heads != config.n_kv_heads) {
    __builtin_trap();
  }
  return 0;
}
