// libFuzzer target: tokenizer.json parsing on arbitrary text, then a short encode/decode round
// with the tokenizer it made. Only ferry::Error may escape.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "ferry/core/error.h"
#include "ferry/models/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using ferry::models::Tokenizer;
  try {
    const Tokenizer t = Tokenizer::from_json(
        std::string_view(reinterpret_cast<const char*>(data), size), "fuzz/tokenizer.json");
    if (t.vocab_size() < 0 || t.vocab_size() > ferry::models::kMaxTokenizerVocab) __builtin_trap();
    std::vector<std::int64_t> ids = t.encode("Hi there, caf\xC3\xA9 <s> 42!");
    for (std::int64_t id : ids) {
      if (id < 0 || id >= t.vocab_size()) __builtin_trap();
    }
    ids.push_back(t.vocab_size() - 1);
    ids.push_back(t.vocab_size() + 7);  // past the vocabulary: decodes to nothing
    (void)t.decode(ids);
    (void)t.decode(ids, /*skip_special_tokens=*/true);
  } catch (const ferry::Error&) {
  }
  return 0;
}
