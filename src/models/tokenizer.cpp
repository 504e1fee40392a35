// tokenizer.json: the parts of Hugging Face tokenizers' format that BPE checkpoints use.
#include "ferry/models/tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "byte_level.h"
#include "ferry/core/error.h"
#include "ferry/models/config.h"
#include "io/json_file.h"
#include "io/printable.h"
#include "model_file.h"
#include "sentencepiece.h"

namespace ferry::models {

using Json = nlohmann::ordered_json;

struct Tokenizer::Impl {
  std::unordered_map<std::string, std::int64_t> vocab;
  // By id. Sparse: memory follows the number of tokens, never the largest id a file names.
  std::unordered_map<std::int64_t, std::string> tokens;
  std::unordered_set<std::int64_t> special;
  std::int64_t size = 0;  // 1 + the largest id
  detail::MergeRanks ranks;
  bool byte_level = false;        // ByteLevel pre-tokenizer/decoder: bytes as printable chars
  bool add_prefix_space = false;  // ByteLevel's add_prefix_space
  std::vector<std::shared_ptr<detail::Regex>> splits;  // Split / ByteLevel regexes, in order
  std::string prepend;                                 // normalizer Prepend / Metaspace "always"
  bool prepend_first_only = false;                     // Metaspace prepend_scheme "first"
  std::vector<std::pair<std::string, std::string>> replacements;  // normalizer Replace
  bool ignore_merges = false;
  bool byte_fallback = false;
  std::optional<std::int64_t> unk;
  std::vector<std::pair<std::string, std::int64_t>> added;  // longest first
  std::optional<std::int64_t> bos, eos;
  bool add_bos = false, add_eos = false;
  bool strip_leading_space = false;  // decoder Strip(" ", 1, 0) of the metaspace family
  std::shared_ptr<const detail::SentencePiece> spm;  // a tokenizer.model does all of the above

  std::vector<std::int64_t> encode_segment(std::string text, bool first) const;
};

namespace {

[[noreturn]] void fail(const std::filesystem::path& file, std::string_view field,
                       std::string_view what) {
  throw CorruptFile(fmt::format("{}: {} {}", file.string(), field, what),
                    ErrorFields{.path = std::string(field), .file = file.string()});
}

// A token id from the file: an integer in [0, limit).
std::int64_t read_id(const Json& id, const std::filesystem::path& file, std::string_view field,
                     std::string_view token, std::int64_t limit) {
  const bool in_range =
      id.is_number_unsigned()  ? id.get<std::uint64_t>() < static_cast<std::uint64_t>(limit)
      : id.is_number_integer() ? id.get<std::int64_t>() >= 0 && id.get<std::int64_t>() < limit
                               : false;
  if (!in_range) {
    throw CorruptFile(
        fmt::format("{}: {} token '{}' has id {}: expected an integer in [0, {})", file.string(),
                    field, io::printable(token.substr(0, 40)), detail::shown(id), limit),
        ErrorFields{.path = std::string(field),
                    .file = file.string(),
                    .expected = fmt::format("an integer in [0, {})", limit),
                    .actual = detail::shown(id)});
  }
  return id.get<std::int64_t>();
}

std::string string_pattern(const Json& pattern) {
  if (pattern.contains("String")) return pattern.at("String").get<std::string>();
  return pattern.at("Regex").get<std::string>();
}

std::string escape_regex(std::string_view literal) {
  std::string out;
  for (char c : literal) {
    if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

void read_normalizer(const Json& n, Tokenizer::Impl& t, const std::filesystem::path& file) {
  if (n.is_null()) return;
  const std::string type = n.value("type", "");
  if (type == "Sequence") {
    for (const Json& step : n.at("normalizers")) read_normalizer(step, t, file);
  } else if (type == "Prepend") {
    t.prepend = n.at("prepend").get<std::string>();
  } else if (type == "Replace") {
    t.replacements.emplace_back(string_pattern(n.at("pattern")),
                                n.at("content").get<std::string>());
  }  // NFC, NFKC, Lowercase, ...: see the header (input assumed normalised).
}

void read_pre_tokenizer(const Json& p, Tokenizer::Impl& t, const std::filesystem::path& file) {
  if (p.is_null()) return;
  const std::string type = p.value("type", "");
  if (type == "Sequence") {
    for (const Json& step : p.at("pretokenizers")) read_pre_tokenizer(step, t, file);
  } else if (type == "ByteLevel") {
    t.byte_level = true;
    t.add_prefix_space = p.value("add_prefix_space", false);
    if (p.value("use_regex", true))
      t.splits.push_back(std::make_shared<detail::Regex>(detail::kGpt2Pattern));
  } else if (type == "Split") {
    const Json& pattern = p.at("pattern");
    const std::string regex = pattern.contains("Regex") ? pattern.at("Regex").get<std::string>()
                                                        : escape_regex(string_pattern(pattern));
    try {
      t.splits.push_back(std::make_shared<detail::Regex>(regex));
    } catch (const InvalidArgument& e) {
      fail(file, "pre_tokenizer.pattern", e.what());
    }
  } else if (type == "Metaspace") {
    const std::string replacement = p.value("replacement", "\xE2\x96\x81");
    t.replacements.emplace_back(" ", replacement);
    const std::string scheme =
        p.value("prepend_scheme", p.value("add_prefix_space", true) ? "always" : "never");
    if (scheme != "never") t.prepend = replacement;
    t.prepend_first_only = scheme == "first";
    if (p.value("split", false)) {
      t.splits.push_back(std::make_shared<detail::Regex>(escape_regex(replacement) + "?[^" +
                                                         escape_regex(replacement) + "]*"));
    }
  } else if (type != "Digits" && type != "Punctuation" && type != "Whitespace") {
    fail(file, "pre_tokenizer.type", fmt::format("'{}' is not supported", type));
  }
}

// The byte a byte-fallback piece "<0xAB>" stands for; nullopt for any other piece.
std::optional<unsigned char> byte_token(std::string_view token) {
  if (token.size() != 6 || !token.starts_with("<0x") || token.back() != '>') return std::nullopt;
  const auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int high = digit(token[3]);
  const int low = digit(token[4]);
  if (high < 0 || low < 0) return std::nullopt;
  return static_cast<unsigned char>(high * 16 + low);
}

std::optional<std::int64_t> special_id(const Json& config, const char* key,
                                       const Tokenizer::Impl& t) {
  if (!config.contains(key) || config.at(key).is_null()) return std::nullopt;
  const Json& v = config.at(key);
  const std::string name = v.is_string() ? v.get<std::string>() : v.value("content", "");
  auto it = t.vocab.find(name);
  return it == t.vocab.end() ? std::nullopt : std::optional(it->second);
}

}  // namespace

std::vector<std::int64_t> Tokenizer::Impl::encode_segment(std::string text, bool first) const {
  if (!prepend.empty() && (first || !prepend_first_only) && !text.empty()) text = prepend + text;
  for (const auto& [from, to] : replacements) {
    for (std::size_t at = 0; !from.empty() && (at = text.find(from, at)) != std::string::npos;) {
      text.replace(at, from.size(), to);
      at += to.size();
    }
  }
  if (byte_level && add_prefix_space && !text.empty() && text[0] != ' ') text = " " + text;
  std::vector<std::string> words{text};
  for (const auto& regex : splits) {
    std::vector<std::string> next;
    for (const auto& w : words) {
      for (auto& piece : regex->split(w)) next.push_back(std::move(piece));
    }
    words = std::move(next);
  }
  std::vector<std::int64_t> ids;
  for (const std::string& word : words) {
    const std::string spelled = byte_level ? detail::bytes_to_printable(word) : word;
    if (auto it = vocab.find(spelled); ignore_merges && it != vocab.end()) {
      ids.push_back(it->second);
      continue;
    }
    for (const std::string& symbol : detail::bpe(detail::utf8_chars(spelled), ranks)) {
      if (auto it = vocab.find(symbol); it != vocab.end()) {
        ids.push_back(it->second);
      } else if (byte_fallback) {
        for (unsigned char b : symbol) {
          auto bit = vocab.find(fmt::format("<0x{:02X}>", b));
          if (bit != vocab.end())
            ids.push_back(bit->second);
          else if (unk)
            ids.push_back(*unk);
        }
      } else if (unk) {
        ids.push_back(*unk);
      }
    }
  }
  return ids;
}

Tokenizer Tokenizer::load(const std::filesystem::path& path,
                          std::optional<std::int64_t> vocab_size) {
  const bool folder = std::filesystem::is_directory(path);
  std::filesystem::path file = folder ? path / "tokenizer.json" : path;
  if (folder && !std::filesystem::exists(file) &&
      std::filesystem::exists(path / "tokenizer.model")) {
    file = path / "tokenizer.model";
  }
  const std::filesystem::path config = file.parent_path() / "tokenizer_config.json";
  const std::string config_text =
      std::filesystem::exists(config) ? detail::read_model_file(config, kMaxConfigBytes) : "";
  if (file.extension() == ".model") return from_sentencepiece(file, config_text);
  return from_json(detail::read_model_file(file, kMaxTokenizerBytes), file, config_text,
                   vocab_size);
}

Tokenizer Tokenizer::from_sentencepiece(const std::filesystem::path& file,
                                        std::string_view tokenizer_config_json) {
  auto t = std::make_shared<Impl>();
  t->spm = detail::SentencePiece::open(file);
  t->size = t->spm->size();
  for (std::int64_t id = 0; id < t->size; ++id) {
    t->tokens[id] = t->spm->piece(id);
    if (t->spm->is_control(id)) t->special.insert(id);
    t->vocab.emplace(t->spm->piece(id), id);
  }
  t->bos = t->spm->bos_id();
  t->eos = t->spm->eos_id();
  // transformers' LlamaTokenizer (the slow, sentencepiece one) adds BOS and not EOS by default.
  t->add_bos = t->bos.has_value();
  if (!tokenizer_config_json.empty()) {
    const std::filesystem::path config = file.parent_path() / "tokenizer_config.json";
    const Json c = io::parse_json(tokenizer_config_json, config.string());
    try {
      if (auto id = special_id(c, "bos_token", *t)) t->bos = id;
      if (auto id = special_id(c, "eos_token", *t)) t->eos = id;
      if (c.contains("add_bos_token")) t->add_bos = c.at("add_bos_token").get<bool>() && t->bos;
      if (c.contains("add_eos_token")) t->add_eos = c.at("add_eos_token").get<bool>() && t->eos;
    } catch (const Json::exception& e) {
      fail(config, "structure", fmt::format("cannot be read: {}", e.what()));
    }
  }
  return Tokenizer(std::move(t));
}

Tokenizer Tokenizer::from_json(std::string_view tokenizer_json, const std::filesystem::path& file,
                               std::string_view tokenizer_config_json,
                               std::optional<std::int64_t> vocab_size) {
  auto t = std::make_shared<Impl>();
  const Json j = io::parse_json(tokenizer_json, file.string());
  try {
    if (!j.is_object() || !j.contains("model")) fail(file, "model", "is missing");
    const Json& model = j.at("model");
    const std::string type = model.value("type", "BPE");
    if (type != "BPE")
      fail(file, "model.type",
           fmt::format("'{}' is not supported (only BPE)", io::printable(type.substr(0, 40))));
    const std::int64_t limit =
        std::min(vocab_size.value_or(kMaxTokenizerVocab), kMaxTokenizerVocab);
    for (const auto& [token, id] : model.at("vocab").items()) {
      t->vocab[token] = read_id(id, file, "model.vocab", token, limit);
    }
    const Json added = j.value("added_tokens", Json::array());
    for (const Json& a : added) {
      const std::string content = a.at("content").get<std::string>();
      const std::int64_t id = read_id(a.at("id"), file, "added_tokens", content, limit);
      t->vocab[content] = id;
      t->added.emplace_back(content, id);
      if (a.value("special", false)) t->special.insert(id);
    }
    for (const auto& [token, id] : t->vocab) {
      t->tokens[id] = token;
      t->size = std::max(t->size, id + 1);
    }
    std::sort(t->added.begin(), t->added.end(),
              [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
    std::int64_t rank = 0;
    for (const Json& m : model.value("merges", Json::array())) {
      std::string left, right;
      if (m.is_array()) {
        left = m.at(0).get<std::string>();
        right = m.at(1).get<std::string>();
      } else {
        const std::string s = m.get<std::string>();
        const std::size_t space = s.find(' ', 1);
        if (space == std::string::npos)
          fail(file, "model.merges", fmt::format("entry '{}' is not 'a b'", s));
        left = s.substr(0, space);
        right = s.substr(space + 1);
      }
      if (!t->vocab.contains(left + right)) {
        fail(file, "model.merges",
             fmt::format("merge '{} {}' makes '{}', which is not in the vocabulary", left, right,
                         left + right));
      }
      t->ranks.emplace(left + ' ' + right, rank++);
    }
    t->ignore_merges = model.value("ignore_merges", false);
    t->byte_fallback = model.value("byte_fallback", false);
    if (model.contains("unk_token") && model.at("unk_token").is_string()) {
      auto it = t->vocab.find(model.at("unk_token").get<std::string>());
      if (it != t->vocab.end()) t->unk = it->second;
    }
    read_normalizer(j.value("normalizer", Json()), *t, file);
    read_pre_tokenizer(j.value("pre_tokenizer", Json()), *t, file);
    const Json decoder = j.value("decoder", Json());
    if (!decoder.is_null() && decoder.value("type", "") == "ByteLevel") t->byte_level = true;
    if (!decoder.is_null() && decoder.dump().find("\"Strip\"") != std::string::npos)
      t->strip_leading_space = true;
    // BOS/EOS: TemplateProcessing's single sequence, unless tokenizer_config.json says.
    const Json post = j.value("post_processor", Json());
    if (!post.is_null() && post.dump().find("TemplateProcessing") != std::string::npos) {
      const Json single = post.value("single", Json::array());
      for (std::size_t i = 0; i < single.size(); ++i) {
        if (!single[i].contains("SpecialToken")) continue;
        auto it = t->vocab.find(single[i].at("SpecialToken").at("id").get<std::string>());
        if (it == t->vocab.end()) continue;
        (i == 0 ? t->bos : t->eos) = it->second;
        (i == 0 ? t->add_bos : t->add_eos) = true;
      }
    }
    if (!tokenizer_config_json.empty()) {
      const Json c = io::parse_json(tokenizer_config_json,
                                    (file.parent_path() / "tokenizer_config.json").string());
      if (auto id = special_id(c, "bos_token", *t)) t->bos = id;
      if (auto id = special_id(c, "eos_token", *t)) t->eos = id;
      if (c.contains("add_bos_token")) t->add_bos = c.at("add_bos_token").get<bool>() && t->bos;
      if (c.contains("add_eos_token")) t->add_eos = c.at("add_eos_token").get<bool>() && t->eos;
    }
  } catch (const Json::exception& e) {
    fail(file, "structure", fmt::format("cannot be read: {}", e.what()));
  }
  return Tokenizer(std::move(t));
}

std::vector<std::int64_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const Impl& t = *impl_;
  std::vector<std::int64_t> ids;
  if (add_special_tokens && t.add_bos) ids.push_back(*t.bos);
  if (t.spm) {
    const auto body = t.spm->encode(text);
    ids.insert(ids.end(), body.begin(), body.end());
    if (add_special_tokens && t.add_eos) ids.push_back(*t.eos);
    return ids;
  }
  std::size_t start = 0;
  bool first = true;
  auto flush = [&](std::size_t end) {
    if (end > start) {
      const auto piece = t.encode_segment(std::string(text.substr(start, end - start)), first);
      ids.insert(ids.end(), piece.begin(), piece.end());
      first = false;
    }
  };
  for (std::size_t i = 0; i < text.size();) {
    const auto hit = std::find_if(t.added.begin(), t.added.end(), [&](const auto& a) {
      return !a.first.empty() && text.substr(i, a.first.size()) == a.first;
    });
    if (hit == t.added.end()) {
      ++i;
      continue;
    }
    flush(i);
    ids.push_back(hit->second);
    first = false;
    i += hit->first.size();
    start = i;
  }
  flush(text.size());
  if (add_special_tokens && t.add_eos) ids.push_back(*t.eos);
  return ids;
}

std::string Tokenizer::decode(const std::vector<std::int64_t>& ids,
                              bool skip_special_tokens) const {
  const Impl& t = *impl_;
  if (t.spm) return decode_sentencepiece(ids, skip_special_tokens);
  std::string out;
  for (std::int64_t id : ids) {
    // Ids past the tokenizer (padded embedding rows) decode to nothing, as in transformers.
    if (id >= 0 && !t.tokens.contains(id)) continue;
    const std::string& token = id_to_token(id);
    const bool special = t.special.contains(id);
    const bool is_added = special || std::any_of(t.added.begin(), t.added.end(),
                                                 [&](const auto& a) { return a.second == id; });
    if (is_added) {
      if (!skip_special_tokens || !special) out += token;
    } else if (t.byte_level) {
      out += detail::printable_to_bytes(token);
    } else if (const auto byte = t.byte_fallback ? byte_token(token) : std::nullopt) {
      out += static_cast<char>(*byte);
    } else {
      std::string piece = token;
      for (const auto& [from, to] : t.replacements) {
        for (std::size_t at = 0; !to.empty() && (at = piece.find(to, at)) != std::string::npos;) {
          piece.replace(at, to.size(), from);
          at += from.size();
        }
      }
      out += piece;
    }
  }
  if (t.strip_leading_space && !out.empty() && out[0] == ' ') out.erase(0, 1);
  return out;
}

// sentencepiece decodes runs of ordinary pieces (joining '▁'s and byte pieces across them) and
// drops control pieces; those are spelled out between runs unless skipped.
std::string Tokenizer::decode_sentencepiece(const std::vector<std::int64_t>& ids,
                                            bool skip_special_tokens) const {
  const Impl& t = *impl_;
  std::string out;
  std::vector<std::int64_t> run;
  for (std::int64_t id : ids) {
    FERRY_CHECK(id >= 0, InvalidArgument, "token id {} is negative", id);
    if (id >= vocab_size()) continue;  // padded embedding rows, as in decode()
    if (!t.special.contains(id)) {
      run.push_back(id);
      continue;
    }
    out += t.spm->decode(run);
    run.clear();
    if (!skip_special_tokens) out += t.tokens.at(id);
  }
  return out + t.spm->decode(run);
}

std::optional<std::int64_t> Tokenizer::token_to_id(std::string_view token) const {
  auto it = impl_->vocab.find(std::string(token));
  return it == impl_->vocab.end() ? std::nullopt : std::optional(it->second);
}

const std::string& Tokenizer::id_to_token(std::int64_t id) const {
  const auto it = impl_->tokens.find(id);
  FERRY_CHECK(it != impl_->tokens.end(), InvalidArgument,
              "token id {} is not in the tokenizer's vocabulary of {}", id, vocab_size());
  return it->second;
}

std::int64_t Tokenizer::vocab_size() const { return impl_->size; }
std::optional<std::int64_t> Tokenizer::bos_token_id() const { return impl_->bos; }
std::optional<std::int64_t> Tokenizer::eos_token_id() const { return impl_->eos; }

}  // namespace ferry::models
