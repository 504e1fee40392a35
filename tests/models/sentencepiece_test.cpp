// tokenizer.model through libsentencepiece. The fixture fixtures/sentencepiece/tokenizer.model
// (1.3 KB) was trained once with Debian's sentencepiece package:
//   spm_train --input=corpus.txt --model_prefix=tokenizer --vocab_size=100 --model_type=bpe
//             --character_coverage=1.0 --normalization_rule_name=identity
// on ~3 KB of English sentences; expected ids below come from `spm_encode --output_format=id`.
#include <gtest/gtest.h>

#include <fstream>

#include "ferry/core/error.h"
#include "ferry/models/tokenizer.h"
#include "models/model_fixtures.h"

namespace ferry::models {
namespace {

const std::filesystem::path kModel = testing::fixture("sentencepiece/tokenizer.model");

// Under AddressSanitizer the library cannot be deep-bound, so ferry reports Unsupported there
// (Note [sentencepiece is dlopen'ed]); the #else branch checks that message.
#if FERRY_HAVE_SENTENCEPIECE && !defined(__SANITIZE_ADDRESS__)

TEST(SentencePieceTokenizer, EncodesAsSpmEncodeAndRoundTrips) {
  const Tokenizer t = Tokenizer::load(kModel);
  EXPECT_EQ(t.vocab_size(), 100);
  EXPECT_EQ(t.bos_token_id(), 1);
  EXPECT_EQ(t.eos_token_id(), 2);
  // spm_encode: "▁ H e l l o ▁w or l d ! ▁T he ▁ q u i ck ▁f o x ."
  const std::vector<std::int64_t> body{64, 94, 65, 74, 74, 68, 15, 49, 74, 73, 92,
                                       53, 20, 64, 98, 80, 72, 41, 24, 68, 88, 81};
  EXPECT_EQ(t.encode("Hello world! The quick fox.", /*add_special_tokens=*/false), body);
  std::vector<std::int64_t> with_bos{1};
  with_bos.insert(with_bos.end(), body.begin(), body.end());
  EXPECT_EQ(t.encode("Hello world! The quick fox."),
            with_bos);  // BOS by default, as LlamaTokenizer
  for (const std::string text :
       {"Hello world! The quick fox.", "a sliding window", "loads shards"}) {
    EXPECT_EQ(t.decode(t.encode(text), /*skip_special_tokens=*/true), text);
  }
  EXPECT_EQ(t.decode(with_bos), "<s>Hello world! The quick fox.");
  EXPECT_EQ(t.decode({5000, 64, 94}), "H");       // ids past the vocabulary decode to nothing
  EXPECT_EQ(t.id_to_token(15), "\xE2\x96\x81w");  // "▁w"
  EXPECT_EQ(t.token_to_id("</s>"), 2);
  EXPECT_THROW(t.decode({-1}), InvalidArgument);
}

TEST(SentencePieceTokenizer, FolderWithOnlyTokenizerModelLoadsItAndItsConfig) {
  testing::TempDir dir;
  std::filesystem::copy_file(kModel, dir.path() / "tokenizer.model");
  const Tokenizer plain = Tokenizer::load(dir.path());
  EXPECT_EQ(plain.encode("fox").front(), 1);
  {
    std::ofstream(dir.path() / "tokenizer_config.json")
        << R"({"add_bos_token": false, "add_eos_token": true})";
  }
  const Tokenizer configured = Tokenizer::load(dir.path());
  const auto ids = configured.encode("fox");
  EXPECT_NE(ids.front(), 1);
  EXPECT_EQ(ids.back(), 2);
  EXPECT_EQ(configured.decode(ids, /*skip_special_tokens=*/true), "fox");
}

TEST(SentencePieceTokenizer, NotAModelIsCorruptFile) {
  testing::TempDir dir;
  { std::ofstream(dir.path() / "tokenizer.model") << "not a protobuf"; }
  try {
    Tokenizer::load(dir.path());
    FAIL();
  } catch (const CorruptFile& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.model: not a SentencePiece model"),
              std::string::npos)
        << e.what();
  }
}

#else

TEST(SentencePieceTokenizer, WithoutTheLibraryIsUnsupported) {
  try {
    Tokenizer::load(kModel);
    FAIL();
  } catch (const Unsupported& e) {
    EXPECT_NE(std::string(e.what()).find("libsentencepiece"), std::string::npos) << e.what();
  }
}

#endif

}  // namespace
}  // namespace ferry::models
