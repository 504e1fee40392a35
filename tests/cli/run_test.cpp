// `ferry run` with disk offload: every way of reading disk weights gives the same tokens, the
// prefetcher's counters are reported, and a staging budget smaller than a block is a clear error.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "run_ferry.h"
#include "scratch_dir.h"

namespace ferry::cli {
namespace {

using testing::run_ferry;
using testing::run_ferry_stdout;

class RunCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto made = run_ferry("make-model --arch llama --seed 1 --out " + model());
    ASSERT_EQ(made.exit_code, 0) << made.out;
  }
  std::string model() const { return (dir_.path() / "tiny").string(); }

  // --json of a greedy run of 4 tokens with `flags`.
  nlohmann::json run_json(const std::string& flags) const {
    const auto r = run_ferry_stdout(
        "run " + model() +
        " --prompt-ids 1,2,3 --max-new-tokens 4 --context 8 --ignore-eos --json " + flags);
    EXPECT_EQ(r.exit_code, 0) << r.out;
    return nlohmann::json::parse(r.out);
  }

  ferry::testing::ScratchDir dir_;
};

TEST_F(RunCommand, EveryWayOfReadingDiskWeightsGivesTheSameTokens) {
  const nlohmann::json all_cpu = run_json("");
  ASSERT_FALSE(all_cpu.contains("prefetch"));  // nothing offloaded, no prefetcher
  for (const char* flags : {"", "--io auto", "--io copy", "--io direct", "--io buffered",
                            "--io direct --no-prefetch", "--io direct --io-threads 1"}) {
    const nlohmann::json j = run_json(std::string("--max-memory cpu=700KB ") + flags);
    EXPECT_EQ(j["token_ids"], all_cpu["token_ids"]) << flags;
    ASSERT_TRUE(j["placed_bytes"].contains("disk")) << flags << j.dump();
    ASSERT_TRUE(j.contains("prefetch")) << flags;
    // Read, or (--io auto, the default) used in place from the page cache, which holds the
    // checkpoint just written.
    EXPECT_GT(j["prefetch"]["bytes_read"].get<std::uint64_t>() +
                  j["prefetch"]["in_place_bytes"].get<std::uint64_t>(),
              0U)
        << flags;
    // Where the bytes came from: never from the page cache without --io auto (the default) or
    // copy.
    const bool maybe_cached = std::string(flags).find("--io ") == std::string::npos ||
                              std::string(flags).find("--io auto") != std::string::npos ||
                              std::string(flags).find("--io copy") != std::string::npos;
    ASSERT_TRUE(j["prefetch"].contains("page_cache_bytes")) << flags;
    ASSERT_TRUE(j["prefetch"].contains("direct_bytes")) << flags;
    if (!maybe_cached) {
      EXPECT_EQ(j["prefetch"]["page_cache_bytes"].get<std::uint64_t>(), 0U) << flags;
    }
    EXPECT_LE(j["prefetch"]["peak_host_reserved_bytes"].get<std::uint64_t>(),
              j["prefetch"]["host_budget_bytes"].get<std::uint64_t>())
        << flags;
    EXPECT_EQ(j["prefetch"]["lookahead"].get<bool>(),
              std::string(flags).find("--no-prefetch") == std::string::npos)
        << flags;
  }
  // Accelerate's way: no prefetcher, no staging kept free, so more rests on the CPU.
  const nlohmann::json mmap = run_json("--max-memory cpu=700KB --io mmap");
  EXPECT_EQ(mmap["token_ids"], all_cpu["token_ids"]);
  EXPECT_FALSE(mmap.contains("prefetch"));
  EXPECT_EQ(mmap["io"], "mmap");
}

// The default --io auto computes from the page cache's pages of an offloaded tensor it holds
// (the checkpoint is read just before, so it does), with the tokens of a copy; those pages are
// reported beside the CPU's peak, not in it, and the run stays within its budget.
TEST_F(RunCommand, CachedOffloadedWeightsAreUsedInPlaceAndNotCountedInThePeak) {
  // Wide enough that the offloaded matrices (2 MiB) are read with O_DIRECT, not buffered.
  const std::string wide = (dir_.path() / "wide").string();
  const auto made = run_ferry(
      "make-model --arch llama --hidden 512 --intermediate 1024 --layers 6 --seed 2 --out " + wide);
  ASSERT_EQ(made.exit_code, 0) << made.out;
  const auto run = [&](const std::string& flags) {
    const auto r = run_ferry_stdout(
        "run " + wide +
        " --prompt-ids 1,2,3 --max-new-tokens 4 --context 8 --ignore-eos --max-memory cpu=24MiB "
        "--json " +
        flags);
    EXPECT_EQ(r.exit_code, 0) << r.out;
    return nlohmann::json::parse(r.out);
  };
  const nlohmann::json copy = run("--io copy");
  // Read through the page cache right before: written minutes earlier under CI's parallel tests,
  // some of its pages had been reclaimed, and those tensors were (rightly) read, not used in place.
  for (const auto& entry : std::filesystem::directory_iterator(wide)) {
    std::ifstream in(entry.path(), std::ios::binary);
    std::vector<char> buffer(std::size_t{1} << 20);
    while (in.read(buffer.data(), static_cast<std::streamsize>(buffer.size())) || in.gcount() > 0) {
    }
  }
  const nlohmann::json auto_ = run("");
  ASSERT_TRUE(auto_["placed_bytes"].contains("disk")) << auto_.dump();
  EXPECT_EQ(auto_["token_ids"], copy["token_ids"]);
  EXPECT_TRUE(auto_["over_budget"].empty()) << auto_["devices"].dump(1);
  const nlohmann::json& cpu = auto_["devices"]["cpu"];
  EXPECT_LE(cpu["peak_bytes"].get<std::uint64_t>(), cpu["limit_bytes"].get<std::uint64_t>());
  EXPECT_EQ(copy["devices"]["cpu"]["page_cache_in_place_bytes"].get<std::uint64_t>(), 0U);
  EXPECT_EQ(copy["prefetch"]["in_place_bytes"].get<std::uint64_t>(), 0U);
  if (copy["prefetch"]["direct_bytes"].get<std::uint64_t>() == 0 &&
      copy["prefetch"]["page_cache_bytes"].get<std::uint64_t>() == 0) {
    GTEST_SKIP() << "the scratch folder's file system does no O_DIRECT: nothing used in place";
  }
  EXPECT_GT(auto_["prefetch"]["in_place_bytes"].get<std::uint64_t>(), 0U);
  EXPECT_GT(cpu["page_cache_in_place_bytes"].get<std::uint64_t>(), std::uint64_t{1} << 20);
  EXPECT_EQ(auto_["prefetch"]["page_cache_bytes"].get<std::uint64_t>(), 0U);  // none copied
}

TEST_F(RunCommand, AStagingBudgetSmallerThanABlockIsAnError) {
  const auto r =
      run_ferry("run " + model() +
                " --prompt-ids 1,2,3 --max-new-tokens 2 --context 8 --max-memory cpu=300KB "
                "--prefetch-bytes 1KB");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(std::regex_search(
      r.out, std::regex("block '[a-z0-9_.]+' needs [0-9]+ bytes of host staging memory but the "
                        "prefetch budget is 1000 bytes")))
      << r.out;
  EXPECT_NE(r.out.find("raise the prefetch budget"), std::string::npos) << r.out;
}

// generation_config.json beside the model: its max_new_tokens and eos ids apply where no flag
// is given; a flag given wins.
TEST_F(RunCommand, GenerationConfigAppliesWhereNoFlagIsGiven) {
  const auto run = [&](const std::string& flags) {
    const auto r = run_ferry_stdout("run " + model() + " --prompt-ids 1,2,3 --json " + flags);
    EXPECT_EQ(r.exit_code, 0) << r.out;
    return nlohmann::json::parse(r.out);
  };
  const nlohmann::json free_run = run("--max-new-tokens 6 --ignore-eos");
  const auto first = free_run["token_ids"][0].get<std::int64_t>();
  std::ofstream(std::filesystem::path(model()) / "generation_config.json")
      << "{\"max_new_tokens\": 3, \"eos_token_id\": [" << first << "]}";
  EXPECT_EQ(run("--ignore-eos")["token_ids"].size(), 3U);                     // the file's length
  EXPECT_EQ(run("--ignore-eos --max-new-tokens 5")["token_ids"].size(), 5U);  // the flag's
  const nlohmann::json stopped = run("");
  EXPECT_EQ(stopped["token_ids"].size(), 1U) << stopped.dump();  // the file's eos id
  EXPECT_EQ(stopped["finish_reason"], "eos");
}

// The context limit is checked before loading with generation_config.json's max_new_tokens too,
// not only with -n: nothing is loaded (no "loading" line) and the message names the figures.
TEST_F(RunCommand, ContextTooSmallForGenerationConfigFailsBeforeLoading) {
  std::ofstream(std::filesystem::path(model()) / "generation_config.json")
      << "{\"max_new_tokens\": 40}";
  const auto r = run_ferry("run " + model() + " --prompt-ids 1,2,3 --context 20");
  std::filesystem::remove(std::filesystem::path(model()) / "generation_config.json");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("--context 20: the longest prompt (3 tokens) plus --max-new-tokens (40) "
                       "needs 43"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(r.out.find("loading"), std::string::npos) << r.out;
}

TEST_F(RunCommand, UnknownIoModeIsRejected) {
  const auto r = run_ferry("run " + model() + " --prompt-ids 1,2,3 --io bogus");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("--io: bogus not in {auto,copy,inplace,direct,buffered,mmap}"),
            std::string::npos)
      << r.out;
}

TEST_F(RunCommand, EveryPromptOfABatchIsPrintedWithItsFinishReason) {
  const auto j = nlohmann::json::parse(
      run_ferry_stdout("run " + model() +
                       " --prompt Hello --prompt 'The sea' --prompt x --max-new-tokens 3 --json")
          .out);
  ASSERT_EQ(j["outputs"].size(), 3u);
  const std::vector<std::string> prompts{"Hello", "The sea", "x"};
  for (std::size_t i = 0; i < 3; ++i) {
    const auto& out = j["outputs"][i];
    EXPECT_EQ(out["index"], i);
    EXPECT_EQ(out["prompt"], prompts[i]);
    EXPECT_FALSE(out["finish_reason"].get<std::string>().empty());
    EXPECT_LE(out["token_ids"].size(), 3u);
    // Each equals the prompt run alone.
    const auto alone =
        nlohmann::json::parse(run_ferry_stdout("run " + model() + " --prompt '" + prompts[i] +
                                               "' --max-new-tokens 3 --json")
                                  .out);
    EXPECT_EQ(out["token_ids"], alone["token_ids"]) << prompts[i];
    EXPECT_EQ(out["finish_reason"], alone["finish_reason"]) << prompts[i];
  }
  // Text: one section per prompt.
  const auto text =
      run_ferry_stdout("run " + model() + " --prompt Hello --prompt 'The sea' --max-new-tokens 3");
  ASSERT_EQ(text.exit_code, 0) << text.out;
  EXPECT_NE(text.out.find("--- prompt 1 of 2 ---\nHello"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("--- prompt 2 of 2 ---\nThe sea"), std::string::npos) << text.out;
}

// Note [Where a step's time goes]: the decode's weight products and the rest, in --json and in
// the summary. int8 reads 1.0625 bytes a weight of the blocks' layers where float32 reads 4;
// lm_head keeps its float32.
TEST_F(RunCommand, TheDecodeIsSplitIntoWeightProductsAndTheRest) {
  const nlohmann::json fp32 = run_json("");
  const nlohmann::json int8 = run_json("--quantize int8");
  for (const nlohmann::json* j : {&fp32, &int8}) {
    ASSERT_EQ((*j)["decode_steps"], 3) << j->dump();
    const nlohmann::json& p = (*j)["decode_products"];
    const auto calls = p["calls"].get<std::int64_t>();
    const auto bytes = p["weight_bytes"].get<std::int64_t>();
    // The same passes and bytes every step.
    EXPECT_GT(calls, 0);
    EXPECT_EQ(calls % 3, 0);
    EXPECT_EQ(bytes % 3, 0);
    EXPECT_GT(p["seconds"].get<double>(), 0.0);
    EXPECT_LT(p["seconds"].get<double>(), (*j)["decode_seconds"].get<double>());
  }
  EXPECT_EQ(int8["decode_products"]["calls"], fp32["decode_products"]["calls"]);
  const nlohmann::json config =
      nlohmann::json::parse(std::ifstream(std::filesystem::path(model()) / "config.json"));
  const std::int64_t lm_head =
      3 * 4 * config["vocab_size"].get<std::int64_t>() * config["hidden_size"].get<std::int64_t>();
  const std::int64_t blocks = fp32["decode_products"]["weight_bytes"].get<std::int64_t>() - lm_head;
  ASSERT_GT(blocks, 0);
  EXPECT_EQ(int8["decode_products"]["weight_bytes"].get<std::int64_t>(),
            blocks / 4 * 17 / 16 + lm_head);  // 1 byte a weight and a float16 per 32
  const auto text = run_ferry("run " + model() + " --prompt-ids 1,2,3 --max-new-tokens 4");
  ASSERT_EQ(text.exit_code, 0) << text.out;
  EXPECT_TRUE(std::regex_search(
      text.out,
      std::regex(
          R"(a decode step: [0-9.]+ ms in the weight products \([0-9.]+ [KMG]iB read, [0-9.]+ GB/s\), [0-9.-]+ ms in the rest)")))
      << text.out;
}

}  // namespace
}  // namespace ferry::cli
