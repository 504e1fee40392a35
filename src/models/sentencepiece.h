#pragma once
// A tokenizer.model (a SentencePiece model) read through Debian's libsentencepiece. ferry builds
// without the library too; then open() throws Unsupported.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::models::detail {

class SentencePiece {
 public:
  // Reads `file`. Throws IoError (missing file), CorruptFile (not a SentencePiece model),
  // Unsupported (ferry built without libsentencepiece).
  static std::shared_ptr<const SentencePiece> open(const std::filesystem::path& file);
  ~SentencePiece();
  SentencePiece(const SentencePiece&) = delete;
  SentencePiece& operator=(const SentencePiece&) = delete;

  // Ids of `text`, no BOS/EOS (the caller adds those per tokenizer_config.json).
  std::vector<std::int64_t> encode(std::string_view text) const;
  // Text of `ids`, all of which must be in [0, size()); control pieces decode to nothing.
  std::string decode(const std::vector<std::int64_t>& ids) const;

  std::int64_t size() const;
  const std::string& piece(std::int64_t id) const;
  // <s>, </s> and the like: not text.
  bool is_control(std::int64_t id) const;
  std::optional<std::int64_t> bos_id() const;
  std::optional<std::int64_t> eos_id() const;

 private:
  struct Processor;
  explicit SentencePiece(std::unique_ptr<Processor> processor);
  std::unique_ptr<Processor> processor_;
};

}  // namespace ferry::models::detail
