// generation_config.json: parsing (one handcrafted bad file per way a field can be wrong),
// precedence (caller, file, config.json, ferry's defaults), and its effect on planning and
// generation of a model folder.
#include "ferry/models/generation_config.h"

#include <gtest/gtest.h>

#include <fstream>

#include "ferry/core/error.h"
#include "ferry/models/generate.h"
#include "ferry/models/make_model.h"
#include "ferry/models/registry.h"
#include "scratch_dir.h"

namespace ferry::models {
namespace {

using TempDir = ferry::testing::ScratchDir;

GenerationConfig parse(const std::string& text) {
  return parse_generation_config(text, "gen/generation_config.json");
}

std::string error_of(const std::string& text) {
  try {
    (void)parse(text);
  } catch (const InvalidArgument& e) {
    return e.what();
  } catch (const CorruptFile& e) {
    return std::string("CorruptFile: ") + e.what();
  }
  return "(no error)";
}

TEST(GenerationConfigParse, ReadsTheFieldsTransformersWrites) {
  // Llama 3 Instruct's file, plus the fields it leaves out.
  const GenerationConfig g = parse(R"({"bos_token_id": 128000, "do_sample": true,
      "eos_token_id": [128001, 128009], "temperature": 0.6, "top_p": 0.9, "top_k": 40,
      "max_new_tokens": 77, "repetition_penalty": 1.1, "pad_token_id": null,
      "transformers_version": "4.40.0.dev0"})");
  EXPECT_EQ(g.eos_token_ids, (std::vector<std::int64_t>{128001, 128009}));
  EXPECT_EQ(g.do_sample, true);
  EXPECT_EQ(g.temperature, 0.6);
  EXPECT_EQ(g.top_p, 0.9);
  EXPECT_EQ(g.top_k, 40);
  EXPECT_EQ(g.max_new_tokens, 77);
  EXPECT_EQ(g.repetition_penalty, 1.1);
  EXPECT_FALSE(g.pad_token_id.has_value());  // null counts as absent
  EXPECT_EQ(g.file, "gen/generation_config.json");
}

TEST(GenerationConfigParse, EosIsAnIntegerOrAListAndEverythingMayBeAbsent) {
  EXPECT_EQ(parse(R"({"eos_token_id": 2})").eos_token_ids, (std::vector<std::int64_t>{2}));
  const GenerationConfig empty = parse("{}");
  EXPECT_TRUE(empty.eos_token_ids.empty());
  EXPECT_FALSE(empty.do_sample || empty.temperature || empty.top_k || empty.top_p ||
               empty.max_new_tokens || empty.repetition_penalty);
}

TEST(GenerationConfigParse, EachBadFieldIsNamedWithTheFile) {
  const std::vector<std::pair<std::string, std::string>> cases{
      {R"({"eos_token_id": -1})", "field 'eos_token_id' must be in [0, 2147483647], got -1"},
      {R"({"eos_token_id": [1, "2"]})", "field 'eos_token_id' must be an integer, got \"2\""},
      {R"({"eos_token_id": 4294967296})", "field 'eos_token_id' must be in [0, 2147483647]"},
      {R"({"eos_token_id": 1.5})", "field 'eos_token_id' must be an integer, got 1.5"},
      {R"({"max_new_tokens": -3})", "field 'max_new_tokens' must be in [0, 2147483648], got -3"},
      {R"({"do_sample": "yes"})", "field 'do_sample' must be true or false"},
      {R"({"temperature": -0.5})", "field 'temperature' must be 0 or more, got -0.5"},
      {R"({"temperature": "hot"})", "field 'temperature' must be a number"},
      {R"({"top_p": 0})", "field 'top_p' must be in (0, 1], got 0"},
      {R"({"min_p": 1.5})", "field 'min_p' must be in [0, 1], got 1.5"},
      {R"({"top_p": 1.5})", "field 'top_p' must be in (0, 1], got 1.5"},
      {R"({"top_k": -1})", "field 'top_k' must be in [0, 2147483648], got -1"},
      {R"({"repetition_penalty": 0})", "field 'repetition_penalty' must be positive, got 0"},
      {R"({"pad_token_id": true})", "field 'pad_token_id' must be an integer, got true"},
  };
  for (const auto& [text, expected] : cases) {
    const std::string message = error_of(text);
    EXPECT_NE(message.find("gen/generation_config.json: " + expected), std::string::npos)
        << text << " -> " << message;
  }
}

TEST(GenerationConfigParse, NotAnObjectOrTooLargeOrTooManyIdsIsRejected) {
  EXPECT_EQ(error_of("[1, 2]").rfind("CorruptFile: ", 0), 0U);
  EXPECT_EQ(error_of("{\"eos_token_id\": ").rfind("CorruptFile: ", 0), 0U);
  EXPECT_EQ(error_of(std::string(kMaxGenerationConfigBytes + 1, ' ')).rfind("CorruptFile: ", 0),
            0U);
  std::string many = "{\"eos_token_id\": [0";
  for (std::size_t i = 0; i < kMaxEosTokenIds; ++i) many += ",1";
  EXPECT_NE(error_of(many + "]}").find("more than"), std::string::npos);
}

ModelConfig config_with_eos(std::vector<std::int64_t> eos) {
  ModelConfig c;
  c.vocab_size = 100;
  c.eos_token_ids = std::move(eos);
  c.file = "m/config.json";
  return c;
}

TEST(ModelGenerationConfig, FileEosWinsElseConfigEosAndIdsAreCheckedAgainstTheVocabulary) {
  const ModelConfig c = config_with_eos({7});
  EXPECT_EQ(model_generation_config(c, std::nullopt).eos_token_ids, (std::vector<std::int64_t>{7}));
  EXPECT_EQ(model_generation_config(c, parse(R"({"temperature": 0.5})")).eos_token_ids,
            (std::vector<std::int64_t>{7}));
  EXPECT_EQ(model_generation_config(c, parse(R"({"eos_token_id": [3, 4]})")).eos_token_ids,
            (std::vector<std::int64_t>{3, 4}));
  try {
    (void)model_generation_config(c, parse(R"({"eos_token_id": [3, 100]})"));
    ADD_FAILURE() << "eos id 100 accepted for a vocabulary of 100";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("gen/generation_config.json: field 'eos_token_id' 100"),
              std::string::npos)
        << e.what();
  }
}

TEST(ResolveGenerateOptions, CallerThenFileThenFerryDefaults) {
  const GenerationConfig none;
  const GenerateOptions defaults;
  const GenerateOptions plain = resolve_generate_options(none, {});
  EXPECT_EQ(plain.max_new_tokens, defaults.max_new_tokens);
  EXPECT_EQ(plain.sampling.temperature, 0.0);  // greedy
  EXPECT_EQ(plain.sampling.top_k, defaults.sampling.top_k);

  const GenerationConfig file = parse(R"({"do_sample": true, "temperature": 0.6, "top_p": 0.9,
      "top_k": 20, "max_new_tokens": 50, "eos_token_id": [5, 6], "repetition_penalty": 1.3,
      "min_p": 0.05})");
  const GenerateOptions from_file = resolve_generate_options(file, {});
  EXPECT_EQ(from_file.max_new_tokens, 50);
  EXPECT_EQ(from_file.sampling.temperature, 0.6);
  EXPECT_EQ(from_file.sampling.top_p, 0.9);
  EXPECT_EQ(from_file.sampling.min_p, 0.05);
  EXPECT_EQ(from_file.sampling.top_k, 20);
  EXPECT_EQ(from_file.sampling.repetition_penalty, 1.3);
  EXPECT_EQ(from_file.eos_token_ids, (std::vector<std::int64_t>{5, 6}));

  const GenerateOptions chosen =
      resolve_generate_options(file, {.max_new_tokens = 3,
                                      .temperature = 0.0,
                                      .top_k = 2,
                                      .min_p = 0.5,
                                      .eos_token_ids = std::vector<std::int64_t>{}});
  EXPECT_EQ(chosen.max_new_tokens, 3);
  EXPECT_EQ(chosen.sampling.temperature, 0.0);  // a chosen temperature of 0 is greedy
  EXPECT_EQ(chosen.sampling.top_k, 2);
  EXPECT_EQ(chosen.sampling.top_p, 0.9);      // not chosen: the file's
  EXPECT_EQ(chosen.sampling.min_p, 0.5);      // chosen (--min-p) over the file's
  EXPECT_TRUE(chosen.eos_token_ids.empty());  // chosen: never stop early

  // do_sample false in the file: greedy even though the file has a temperature.
  const GenerationConfig greedy_file = parse(R"({"do_sample": false, "temperature": 0.6})");
  EXPECT_EQ(resolve_generate_options(greedy_file, {}).sampling.temperature, 0.0);
  // A chosen temperature samples whatever the file says; a chosen do_sample without one takes
  // the file's temperature, else 1.
  EXPECT_EQ(resolve_generate_options(greedy_file, {.temperature = 0.8}).sampling.temperature, 0.8);
  EXPECT_EQ(resolve_generate_options(greedy_file, {.do_sample = true}).sampling.temperature, 0.6);
  EXPECT_EQ(resolve_generate_options(none, {.do_sample = true}).sampling.temperature, 1.0);
  EXPECT_EQ(resolve_generate_options(file, {.do_sample = false}).sampling.temperature, 0.0);
}

// A made model folder with a generation_config.json.
class GenerationConfigFolder : public ::testing::Test {
 protected:
  void SetUp() override {
    made_ = make_model(dir_.path(),
                       {.arch = "llama",
                        .hidden_size = 32,
                        .n_layers = 2,
                        .n_heads = 4,
                        .intermediate_size = 64,
                        .max_position_embeddings = 1024,  // the context reserved is not clamped
                        .n_merges = 20});
  }
  void write(const std::string& text) {
    std::ofstream(dir_.path() / "generation_config.json") << text;
  }
  TempDir dir_;
  MadeModel made_;
};

TEST_F(GenerationConfigFolder, LoadModelAppliesItToPlanningAndGeneration) {
  const LoadedModel without =
      load_model(dir_.path(), {.dispatch = {.device_map = plan::Strategy::kAuto,
                                            .max_memory = plan::MemoryBudget::parse("cpu=1GiB")}});
  EXPECT_TRUE(without.generation.file.empty());
  const std::vector<std::int64_t> prompt{3, 7, 11, 13};
  const std::vector<std::int64_t> greedy =
      generate(*without.model, {prompt}, resolve_generate_options(without.generation, {}))
          .tokens[0];
  ASSERT_EQ(static_cast<std::int64_t>(greedy.size()), kDefaultMaxNewTokens);

  // The file's eos id is the third greedy token: generation stops there; its max_new_tokens
  // grows the KV cache the plan reserves.
  write(fmt::format(R"({{"eos_token_id": {}, "max_new_tokens": 100}})", greedy[2]));
  const LoadedModel with =
      load_model(dir_.path(), {.dispatch = {.device_map = plan::Strategy::kAuto,
                                            .max_memory = plan::MemoryBudget::parse("cpu=1GiB")}});
  EXPECT_EQ(with.generation.file, dir_.path() / "generation_config.json");
  const GenerateResult r =
      generate(*with.model, {prompt}, resolve_generate_options(with.generation, {}));
  ASSERT_FALSE(r.tokens[0].empty());
  EXPECT_EQ(r.finish_reasons[0], "eos") << r.tokens[0].size();
  EXPECT_EQ(r.tokens[0].back(), greedy[2]);
  ASSERT_TRUE(without.resolution && with.resolution);
  const auto kv = [](const plan::Resolution& res) {
    std::uint64_t bytes = 0;
    for (const auto& reserve : res.reserves) {
      if (reserve.what == "kv cache") bytes += reserve.bytes;
    }
    return bytes;
  };
  EXPECT_GT(kv(*with.resolution), kv(*without.resolution));
  // The caller's choice wins over the file in planning too.
  const LoadedModel chosen =
      load_model(dir_.path(), {.dispatch = {.device_map = plan::Strategy::kAuto,
                                            .max_memory = plan::MemoryBudget::parse("cpu=1GiB")},
                               .shape = {.max_new_tokens = kDefaultMaxNewTokens}});
  EXPECT_EQ(kv(*chosen.resolution), kv(*without.resolution));
}

TEST_F(GenerationConfigFolder, BadFileFailsTheLoadNamingIt) {
  write(R"({"top_p": 7})");
  try {
    (void)load_model(dir_.path());
    ADD_FAILURE() << "a top_p of 7 was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("generation_config.json: field 'top_p'"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace ferry::models
