// tokenizer.json: byte-level BPE (the synthetic tokenizer, GPT-2 regex, special tokens, BOS),
// metaspace BPE with byte fallback (Llama 2 style), and files that cannot be used.
#include "ferry/models/tokenizer.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sys/stat.h>

#include "ferry/core/error.h"
#include "ferry/models/make_model.h"
#include "models/model_fixtures.h"

namespace ferry::models {
namespace {

Tokenizer byte_level(const std::string& arch, std::string_view config = {}) {
  return Tokenizer::from_json(make_tokenizer_json(arch, 100), "t/tokenizer.json", config);
}

TEST(ByteLevelTokenizer, RoundTripsAnyText) {
  const Tokenizer t = byte_level("gpt2");
  for (const std::string& text : std::vector<std::string>{
           "The quick brown fox", "  two  spaces\nand\ttabs", "naïve café 日本語 🚀",
           "it's 2024: $3.50!", std::string("\xff\xfe bytes", 8)}) {
    EXPECT_EQ(t.decode(t.encode(text)), text);
  }
}

TEST(ByteLevelTokenizer, MergesAndPreTokenizes) {
  const Tokenizer t = byte_level("gpt2");
  // " the" is frequent in the corpus: one token; words never merge across the regex pieces.
  const auto ids = t.encode(" the the");
  EXPECT_EQ(ids.size(), 2u);
  EXPECT_EQ(ids[0], ids[1]);
  EXPECT_EQ(t.id_to_token(ids[0]), "\xC4\xA0the");  // "Ġthe"
  EXPECT_EQ(t.encode("A").front(), 'A');            // the 256 byte tokens come first, by byte value
}

TEST(ByteLevelTokenizer, SpecialTokensAndBos) {
  const Tokenizer t =
      byte_level("llama", R"({"add_bos_token": true, "bos_token": "<|begin_of_text|>",
                                              "eos_token": {"content": "<|end_of_text|>"}})");
  const auto bos = *t.token_to_id("<|begin_of_text|>");
  const auto eos = *t.token_to_id("<|end_of_text|>");
  EXPECT_EQ(t.bos_token_id(), bos);
  EXPECT_EQ(t.eos_token_id(), eos);
  const auto ids = t.encode("hi<|end_of_text|>there");
  EXPECT_EQ(ids.front(), bos);
  EXPECT_NE(std::find(ids.begin(), ids.end(), eos), ids.end());
  EXPECT_EQ(t.decode(ids), "<|begin_of_text|>hi<|end_of_text|>there");
  EXPECT_EQ(t.decode(ids, /*skip_special_tokens=*/true), "hithere");
  EXPECT_EQ(t.encode("Q", /*add_special_tokens=*/false), std::vector<std::int64_t>{'Q'});
  EXPECT_EQ(t.decode({5000}), "");  // padded embedding rows decode to nothing
}

// A Llama-2-style tokenizer.json: Prepend/Replace normalizer, BPE over characters with '▁',
// byte fallback for what the vocabulary lacks.
constexpr const char* kMetaspace = R"({
  "added_tokens": [{"id": 1, "content": "<s>", "special": true}, {"id": 2, "content": "</s>", "special": true}],
  "normalizer": {"type": "Sequence", "normalizers": [
     {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
  "pre_tokenizer": null,
  "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]},
  "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
     {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
  "model": {"type": "BPE", "byte_fallback": true, "unk_token": "<unk>",
    "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0xC3>": 3, "<0xA9>": 4, "▁": 5, "h": 6, "i": 7, "▁h": 8, "▁hi": 9, "t": 10},
    "merges": ["▁ h", "▁h i"]}})";

TEST(MetaspaceTokenizer, PrependsMetaspaceAndFallsBackToBytes) {
  const Tokenizer t = Tokenizer::from_json(kMetaspace, "llama2/tokenizer.json");
  EXPECT_EQ(t.encode("hi hi"), (std::vector<std::int64_t>{1, 9, 9}));
  EXPECT_EQ(t.encode("hé", false), (std::vector<std::int64_t>{8, 3, 4}));
  EXPECT_EQ(t.decode(t.encode("hi hé")), "<s> hi hé");  // as transformers prints Llama 2
  EXPECT_EQ(t.decode(t.encode("hi hé"), true), "hi hé");
}

TEST(TokenizerErrors, NameFileAndField) {
  auto error = [](std::string_view text) {
    try {
      Tokenizer::from_json(text, "m/tokenizer.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_EQ(error(R"({"model": {"type": "Unigram", "vocab": []}})"),
            "m/tokenizer.json: model.type 'Unigram' is not supported (only BPE)");
  EXPECT_EQ(
      error(R"({"model": {"vocab": {"a": 0, "b": 1}, "merges": ["a b"]}})"),
      "m/tokenizer.json: model.merges merge 'a b' makes 'ab', which is not in the vocabulary");
  EXPECT_EQ(error(R"({"version": "1.0"})"), "m/tokenizer.json: model is missing");
  EXPECT_NE(
      error(
          R"({"model": {"vocab": {}}, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(("}}})")
          .find("m/tokenizer.json: pre_tokenizer.pattern regex '((' does not compile"),
      std::string::npos);
  EXPECT_NE(error("{broken").find("m/tokenizer.json"), std::string::npos);
  EXPECT_EQ(error(R"({"model": {"vocab": {"a": "zero"}}})"),
            "m/tokenizer.json: model.vocab token 'a' has id \"zero\": expected an integer in [0, "
            "2147483648)");
  EXPECT_EQ(error(R"({"model": {"vocab": []}, "added_tokens": [{"id": 1}]})").substr(0, 37),
            "m/tokenizer.json: structure cannot be");
}

// A tokenizer.json whose vocabulary is {"a": 0, "b": <b_id>} and added tokens [{"<s>", <s_id>}].
std::string with_ids(const std::string& b_id, const std::string& s_id = "1") {
  return R"({"added_tokens": [{"id": )" + s_id + R"(, "content": "<s>", "special": true}],
             "model": {"type": "BPE", "vocab": {"a": 0, "b": )" +
         b_id + "}}}";
}

std::string tokenizer_error(const std::string& text, std::optional<std::int64_t> vocab = {}) {
  try {
    Tokenizer::from_json(text, "m/tokenizer.json", {}, vocab);
  } catch (const CorruptFile& e) {
    return e.what();
  }
  return "(no CorruptFile)";
}

TEST(TokenizerErrors, IdsMustBeIntegersInRange) {
  for (const std::string id : {"9223372036854775807", "18446744073709551615", "1099511627776",
                               "1000000000000", "2147483648", "-1", "-9223372036854775808"}) {
    EXPECT_EQ(tokenizer_error(with_ids(id)), "m/tokenizer.json: model.vocab token 'b' has id " +
                                                 id + ": expected an integer in [0, 2147483648)");
    EXPECT_EQ(tokenizer_error(with_ids("1", id)),
              "m/tokenizer.json: added_tokens token '<s>' has id " + id +
                  ": expected an integer in [0, 2147483648)");
  }
  EXPECT_EQ(tokenizer_error(with_ids("1.5")),
            "m/tokenizer.json: model.vocab token 'b' has id 1.5: expected an integer in [0, "
            "2147483648)");
  EXPECT_EQ(tokenizer_error(with_ids("\"1\"")),
            "m/tokenizer.json: model.vocab token 'b' has id \"1\": expected an integer in [0, "
            "2147483648)");
  EXPECT_EQ(tokenizer_error(with_ids("null", "1")).substr(0, 45),
            "m/tokenizer.json: model.vocab token 'b' has i");
  // With config.json's vocabulary size, ids are bounded by it.
  EXPECT_EQ(tokenizer_error(with_ids("7"), 5),
            "m/tokenizer.json: model.vocab token 'b' has id 7: expected an integer in [0, 5)");
  EXPECT_NO_THROW(Tokenizer::from_json(with_ids("4", "3"), "t.json", {}, 5));
}

TEST(Tokenizer, SparseIdsCostMemoryByTokenNotById) {
  // The largest allowed id: one table entry, not 2^31.
  const Tokenizer t = Tokenizer::from_json(with_ids("2147483647"), "t.json");
  EXPECT_EQ(t.vocab_size(), 2147483648);
  EXPECT_EQ(t.id_to_token(2147483647), "b");
  EXPECT_EQ(t.decode({0, 2147483647, 1, 5, 2147483646}), "ab<s>");  // unused ids: nothing
  EXPECT_EQ(t.decode({0, 2147483647, 1}, /*skip_special_tokens=*/true), "ab");
  EXPECT_THROW(t.id_to_token(5), InvalidArgument);
}

TEST(Tokenizer, MalformedByteFallbackPieceDecodesAsText) {
  const Tokenizer t = Tokenizer::from_json(
      R"({"model": {"type": "BPE", "byte_fallback": true,
          "vocab": {"<0xZZ>": 0, "<0x41>": 1, "<0x-1>": 2}}})",
      "t.json");
  EXPECT_EQ(t.decode({0, 1, 2}), "<0xZZ>A<0x-1>");
}

TEST(TokenizerErrors, FilesMustBeSmallRegularFiles) {
  testing::TempDir dir;
  ASSERT_EQ(::mkfifo((dir.path() / "tokenizer.json").c_str(), 0600), 0);
  EXPECT_THROW(Tokenizer::load(dir.path()), IoError);  // returns: never opened
  std::filesystem::remove(dir.path() / "tokenizer.json");
  std::ofstream(dir.path() / "tokenizer.json") << with_ids("1");
  ASSERT_EQ(::mkfifo((dir.path() / "tokenizer_config.json").c_str(), 0600), 0);
  EXPECT_THROW(Tokenizer::load(dir.path()), IoError);
  std::filesystem::remove(dir.path() / "tokenizer_config.json");
  EXPECT_EQ(Tokenizer::load(dir.path()).vocab_size(), 2);
  EXPECT_THROW(Tokenizer::load(dir.path(), 1), CorruptFile);  // "b" has id 1
  std::filesystem::resize_file(dir.path() / "tokenizer.json", kMaxTokenizerBytes + 1);
  EXPECT_THROW(Tokenizer::load(dir.path()), CorruptFile);
}

TEST(MakeModel, WritesALoadableFolder) {
  testing::TempDir dir;
  const MadeModel made = make_model(
      dir.path(),
      {.arch = "gpt2", .hidden_size = 32, .n_layers = 1, .max_shard_size = Bytes(50'000)});
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "model.safetensors.index.json"));
  const Tokenizer t = Tokenizer::load(dir.path());
  EXPECT_EQ(t.decode(t.encode("hello")), "hello");
  EXPECT_EQ(t.eos_token_id(), made.config.eos_token_ids.front());
  EXPECT_LE(t.vocab_size(), made.config.vocab_size);
  EXPECT_THROW(make_model(dir.path(), {.arch = "bert"}), InvalidArgument);
}

TEST(MakeModel, SizeChoosesDimensions) {
  testing::TempDir dir;
  const MadeModel made = make_model(dir.path(), {.arch = "llama", .target_size = Bytes(4'000'000)});
  EXPECT_GT(made.size.value(), 2'500'000u);
  EXPECT_LT(made.size.value(), 6'000'000u);
  EXPECT_GE(made.config.n_layers, 8);
}

}  // namespace
}  // namespace ferry::models
