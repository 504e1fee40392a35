#pragma once
// Pieces of tokenization shared by the tokenizer and the synthetic tokenizer make-model writes
// (private to models): GPT-2's byte ↔ printable-character table, UTF-8 helpers, PCRE2 splitting,
// and the BPE merge loop.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace ferry::models::detail {

// GPT-2's pre-tokenizer pattern (ByteLevel with use_regex).
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// UTF-8 encoding of one code point.
std::string utf8_encode(char32_t code_point);
// `text` split into UTF-8 characters (an invalid byte becomes a one-byte piece).
std::vector<std::string> utf8_chars(std::string_view text);
// Each byte of `text` as GPT-2's printable character (bytes_to_unicode), concatenated.
std::string bytes_to_printable(std::string_view text);
// The inverse; characters outside the table are kept as their UTF-8 bytes.
std::string printable_to_bytes(std::string_view text);

// A compiled PCRE2 pattern (UTF, Unicode properties). Throws InvalidArgument with PCRE2's
// message and offset.
class Regex {
 public:
  explicit Regex(std::string_view pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // `text` cut into matches and the gaps between them, in order (Split "Isolated").
  std::vector<std::string> split(std::string_view text) const;

 private:
  void* code_;  // pcre2_code_8*
};

// Merge ranks keyed by "left right" (a space joins the two symbols).
using MergeRanks = std::unordered_map<std::string, std::int64_t>;
// BPE over `symbols`: repeatedly merge the adjacent pair of lowest rank.
std::vector<std::string> bpe(std::vector<std::string> symbols, const MergeRanks& ranks);

}  // namespace ferry::models::detail
