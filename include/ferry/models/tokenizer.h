#pragma once
// Text ↔ token ids from a Hugging Face tokenizer.json: BPE models either byte-level (GPT-2,
// Llama 3, Qwen2: ByteLevel / Split-regex pre-tokenizers) or over characters with the '▁'
// metaspace and byte fallback (Llama 2, Mistral: Prepend/Replace normalizers or a Metaspace
// pre-tokenizer); added and special tokens matched before everything else. BOS/EOS insertion
// follows tokenizer_config.json (add_bos_token, add_eos_token) when present beside it, else the
// tokenizer.json's TemplateProcessing post-processor. Unicode normalisation (NFC) is assumed
// done: normalizer steps other than Prepend and Replace are ignored.
// A folder with only a tokenizer.model (SentencePiece) is read through libsentencepiece when
// ferry was built with it; BOS is then added unless tokenizer_config.json says otherwise.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::models {

// Token ids a tokenizer.json may use when no vocabulary size is given: [0, kMaxTokenizerVocab)
// (32-bit ids, as Hugging Face tokenizers store them).
inline constexpr std::int64_t kMaxTokenizerVocab = std::int64_t{1} << 31;
// The largest tokenizer.json load() reads (released ones are below 40 MB).
inline constexpr std::uint64_t kMaxTokenizerBytes = std::uint64_t{256} << 20;

class Tokenizer {
 public:
  // Reads `path`: a tokenizer.json or tokenizer.model, or a folder holding one (tokenizer.json
  // preferred) and maybe tokenizer_config.json. `vocab_size` (config.json's), when given, bounds
  // the ids of tokenizer.json (see from_json). Throws IoError (also for a path that is not a
  // regular file), CorruptFile naming the file and the field that cannot be used (an unknown
  // model type, a merge naming a token not in the vocabulary, a token id that is not an integer
  // in range, a pre-tokenizer regex PCRE2 rejects, a .model that is not SentencePiece's, a
  // tokenizer.json over kMaxTokenizerBytes), Unsupported for a tokenizer.model when ferry was
  // built without libsentencepiece.
  static Tokenizer load(const std::filesystem::path& path,
                        std::optional<std::int64_t> vocab_size = std::nullopt);
  // Reads a SentencePiece model file (and optionally tokenizer_config.json text). Throws as
  // load() does.
  static Tokenizer from_sentencepiece(const std::filesystem::path& file,
                                      std::string_view tokenizer_config_json = {});
  // Parses tokenizer.json text (and optionally tokenizer_config.json text); `file` names it in
  // errors. Every id of model.vocab and added_tokens must be an integer in [0, vocab_size), or
  // [0, kMaxTokenizerVocab) without one; memory follows the number of tokens, not the ids.
  static Tokenizer from_json(std::string_view tokenizer_json, const std::filesystem::path& file,
                             std::string_view tokenizer_config_json = {},
                             std::optional<std::int64_t> vocab_size = std::nullopt);

  // Token ids of `text` (UTF-8); with add_special_tokens, BOS/EOS as configured.
  std::vector<std::int64_t> encode(std::string_view text, bool add_special_tokens = true) const;
  // Text of `ids`; bytes of partial UTF-8 sequences are kept as they are. Ids past the
  // vocabulary (padded embedding rows) decode to nothing; negative ids throw InvalidArgument.
  std::string decode(const std::vector<std::int64_t>& ids, bool skip_special_tokens = false) const;

  std::optional<std::int64_t> token_to_id(std::string_view token) const;
  // The token string (as the vocabulary spells it); InvalidArgument for an unknown id.
  const std::string& id_to_token(std::int64_t id) const;
  // 1 + the largest id (vocabulary and added tokens).
  std::int64_t vocab_size() const;
  std::optional<std::int64_t> bos_token_id() const;
  std::optional<std::int64_t> eos_token_id() const;

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::string decode_sentencepiece(const std::vector<std::int64_t>& ids,
                                   bool skip_special_tokens) const;
  std::shared_ptr<const Impl> impl_;
};

}  // namespace ferry::models
