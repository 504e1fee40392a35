// The one-call path: load_pretrained + Pretrained::generate on a made model folder, and
// examples/hf_llama run on one (its output equals what the library generates in process).
#include "ferry/models/pretrained.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "ferry/core/error.h"
#include "ferry/models/make_model.h"
#include "scratch_dir.h"

namespace ferry::models {
namespace {

using ScratchDir = ferry::testing::ScratchDir;

class PretrainedFolder : public ::testing::Test {
 protected:
  void SetUp() override {
    made_ = make_model(dir_.path(), {.arch = "llama",
                                     .hidden_size = 64,
                                     .n_layers = 8,
                                     .n_heads = 4,
                                     .intermediate_size = 128,
                                     .max_position_embeddings = 256,
                                     .n_merges = 40});
  }
  ScratchDir dir_;
  MadeModel made_;
};

TEST_F(PretrainedFolder, GenerateEqualsLoadModelWithTheSameResolvedOptions) {
  auto model =
      ferry::load_pretrained(dir_.path(), {.device_map = "auto", .max_memory = "cpu=2GiB"});
  EXPECT_EQ(model.config().vocab_size, made_.config.vocab_size);
  const std::string text = model.generate("Hello there", {.max_new_tokens = 12});

  LoadedModel reference = load_model(dir_.path());
  const Tokenizer tokenizer = Tokenizer::load(dir_.path(), reference.config.vocab_size);
  GenerateOptions g = resolve_generate_options(reference.generation, {.max_new_tokens = 12});
  if (tokenizer.eos_token_id()) g.eos_token_ids.push_back(*tokenizer.eos_token_id());
  const GenerateResult r = generate(*reference.model, {tokenizer.encode("Hello there")}, g);
  EXPECT_EQ(text, tokenizer.decode(r.tokens[0], /*skip_special_tokens=*/true));
  EXPECT_LE(r.tokens[0].size(), 12U);
}

TEST_F(PretrainedFolder, DiskOffloadedGivesTheSameText) {
  auto in_ram = ferry::load_pretrained(dir_.path(), {.device_map = "cpu"});
  EXPECT_TRUE(in_ram.device_map().uses(Placement::cpu()));
  // A budget below the weights (1.22 MiB) with a short run reserved: the first layers rest in
  // RAM, the rest on disk, streamed in at every forward.
  auto offloaded = ferry::load_pretrained(
      dir_.path(), {.max_memory = "cpu=1400KB", .context = 64, .max_new_tokens = 16});
  EXPECT_TRUE(offloaded.device_map().uses(Placement::cpu())) << offloaded.device_map().to_json();
  EXPECT_TRUE(offloaded.device_map().uses(Placement::disk())) << offloaded.device_map().to_json();
  const GenerationChoices greedy{.max_new_tokens = 8, .eos_token_ids = std::vector<std::int64_t>{}};
  EXPECT_EQ(in_ram.generate("abc", greedy), offloaded.generate("abc", greedy));
}

TEST_F(PretrainedFolder, GenerationConfigEosAndLengthApply) {
  auto plain = ferry::load_pretrained(dir_.path(), {.device_map = "cpu"});
  const std::vector<std::int64_t> prompt = plain.tokenizer().encode("xyz");
  const GenerationChoices no_eos{.eos_token_ids = std::vector<std::int64_t>{}};
  const std::vector<std::int64_t> free_run =
      generate(plain.model(), {prompt}, resolve_generate_options(plain.generation_config(), no_eos))
          .tokens[0];
  ASSERT_EQ(static_cast<std::int64_t>(free_run.size()), kDefaultMaxNewTokens);
  // The file names the free run's first token as eos and asks for 5 tokens.
  std::ofstream(dir_.path() / "generation_config.json")
      << fmt::format(R"({{"eos_token_id": [{}], "max_new_tokens": 5}})", free_run.front());
  auto with_file = ferry::load_pretrained(dir_.path(), {.device_map = "cpu"});
  EXPECT_EQ(with_file.generation_config().eos_token_ids,
            (std::vector<std::int64_t>{free_run.front()}));
  const Tokenizer& tokenizer = with_file.tokenizer();
  EXPECT_EQ(with_file.generate("xyz"), tokenizer.decode({free_run.front()}, true));
  const std::vector<std::int64_t> five(free_run.begin(), free_run.begin() + 5);
  EXPECT_EQ(with_file.generate("xyz", no_eos), tokenizer.decode(five, true));
}

TEST_F(PretrainedFolder, BadOptionsAreTypedErrors) {
  EXPECT_THROW((void)ferry::load_pretrained(dir_.path(), {.device_map = "everywhere"}),
               InvalidArgument);
  EXPECT_THROW((void)ferry::load_pretrained(dir_.path(), {.max_memory = "cpu=lots"}),
               InvalidArgument);
  EXPECT_THROW((void)ferry::load_pretrained(dir_.path() / "absent"), IoError);
}

TEST(MemoryBudgetParse, IsGetMaxMemoryOfTheEntries) {
  const plan::MemoryBudget b = plan::MemoryBudget::parse("0=20GiB,cpu=64GiB", /*gpu_count=*/1);
  EXPECT_EQ(b.at(Placement::gpu(0)), Bytes::parse("20GiB"));
  EXPECT_EQ(b.at(Placement::cpu()), Bytes::parse("64GiB"));
  EXPECT_EQ(b, plan::get_max_memory(plan::parse_budget_entries("0=20GiB,cpu=64GiB"), 1));
  EXPECT_THROW((void)plan::MemoryBudget::parse("cpu"), InvalidArgument);
  EXPECT_THROW((void)plan::MemoryBudget::parse("tpu=1GiB"), InvalidArgument);
}

#ifdef FERRY_EXAMPLE_HF_LLAMA
// examples/hf_llama.cpp, run as a user would, prints the prompt and what the library generates.
TEST_F(PretrainedFolder, ExampleProgramPrintsTheGeneratedText) {
  const std::string prompt = "Once upon a time";
  const std::string budget = "cpu=64MiB";
  auto model = ferry::load_pretrained(dir_.path(), {.max_memory = budget});
  const std::string expected = prompt + model.generate(prompt, {.max_new_tokens = 16}) + "\n";
  const std::string command = fmt::format("'{}' '{}' '{}' '{}' 2>/dev/null", FERRY_EXAMPLE_HF_LLAMA,
                                          dir_.path().string(), budget, prompt);
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buffer[4096];
  while (std::size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) out.append(buffer, n);
  const int status = ::pclose(pipe);
  EXPECT_EQ(status, 0) << out;
  EXPECT_EQ(out, expected);
}
#endif

}  // namespace
}  // namespace ferry::models
