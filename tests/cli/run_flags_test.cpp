// `ferry run`'s flags (issue 13): checked before anything is loaded, prompts from standard input
// and files, --quiet, llama.cpp's short spellings, --min-p, unexpected arguments in order, and
// the messages of the errors found before loading.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <regex>
#include <string>
#include <sys/stat.h>

#include "run_ferry.h"
#include "tiny_model.h"

namespace ferry::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::Result;
using testing::run_ferry;
using testing::run_ferry_bounded;
using testing::run_ferry_redirected;
using testing::run_ferry_stderr;
using testing::run_ferry_stdout;

class RunCommandFlags : public testing::TinyModel {
 protected:
  // The generated token ids of a greedy --json run with `flags`.
  nlohmann::json tokens(const std::string& flags) const {
    const Result r = run_ferry_stdout("run " + model() + " --json --ignore-eos " + flags);
    EXPECT_EQ(r.exit_code, 0) << flags << "\n" << r.out;
    return nlohmann::json::parse(r.out)["token_ids"];
  }
};

TEST_F(RunCommandFlags, ABadFlagIsReportedBeforeAnythingIsLoaded) {
  for (const auto& [flag, message] :
       {std::pair{"-p Hello --temperature -1",
                  "--temperature: expected 0 (greedy) or more, got -1"},
        std::pair{"-p Hello --temp -1", "--temperature: expected 0 (greedy) or more, got -1"},
        std::pair{"-p Hello --min-p 1.5", "--min-p: expected a value in [0, 1] (0: off), got 1.5"},
        std::pair{"-p Hello --top-p 0", "--top-p: expected a value in (0, 1], got 0"},
        std::pair{"-p Hello --stop ''", "--stop: expected a non-empty string"},
        std::pair{"-p Hello -t -2", "--threads: expected a positive count"},
        std::pair{"--prompt-ids 1,x", "--prompt-ids: 'x' is not an integer"}}) {
    const Result r = run_ferry("run " + model() + " " + flag);
    EXPECT_EQ(r.exit_code, 1) << flag;
    EXPECT_THAT(r.out, HasSubstr(message)) << flag;
    // Nothing was loaded, and the prompt was not echoed.
    EXPECT_THAT(r.out, Not(HasSubstr("loading"))) << flag;
    EXPECT_THAT(r.out, Not(HasSubstr("Hello"))) << flag;
  }
  // Flags come before the model: a bad flag with a model that does not exist names the flag.
  const Result r = run_ferry("run " + path("absent") + " -p Hello --temp -1");
  EXPECT_THAT(r.out, HasSubstr("--temperature"));
}

TEST_F(RunCommandFlags, PromptsFromStandardInputAndFilesAreThePromptText) {
  const std::string text = "The quick brown fox";
  const nlohmann::json given = tokens("-n 4 -p '" + text + "'");
  const std::string file = write("prompt.txt", text);
  EXPECT_EQ(tokens("-n 4 -f " + file), given);
  EXPECT_EQ(tokens("-n 4 --file " + file), given);
  const Result piped = run_ferry_redirected(
      "run " + model() + " --json --ignore-eos -n 4 --prompt -", ("2>/dev/null <" + file).c_str());
  ASSERT_EQ(piped.exit_code, 0) << piped.out;
  EXPECT_EQ(nlohmann::json::parse(piped.out)["token_ids"], given);
  // One source only.
  const Result both = run_ferry("run " + model() + " -p Hi -f " + file);
  EXPECT_EQ(both.exit_code, 1);
  EXPECT_THAT(both.out, HasSubstr("give one of --prompt TEXT"));
}

TEST_F(RunCommandFlags, APromptFileThatIsAFifoOrAFolderFailsAtOnce) {
  const std::string fifo = path("prompt.fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const auto start = std::chrono::steady_clock::now();
  const Result r = run_ferry_bounded(60, "run " + model() + " -f " + fifo, "2>&1");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr("--file " + fifo + " is a FIFO: expected a file"));
  const Result folder = run_ferry("run " + model() + " -f " + dir_.path().string());
  EXPECT_EQ(folder.exit_code, 1);
  EXPECT_THAT(folder.out, HasSubstr("is a folder: expected a file"));
  const Result missing = run_ferry("run " + model() + " -f " + path("absent.txt"));
  EXPECT_THAT(missing.out, HasSubstr("--file " + path("absent.txt") + " does not exist"));
}

TEST_F(RunCommandFlags, QuietPrintsOnlyTheGeneratedTextOnStdout) {
  const Result json = run_ferry_stdout("run " + model() + " -p Hello -n 5 --ignore-eos --json");
  ASSERT_EQ(json.exit_code, 0) << json.out;
  const std::string text = nlohmann::json::parse(json.out)["text"];
  const std::string flags = " -p Hello -n 5 --ignore-eos --quiet";
  const Result out = run_ferry_stdout("run " + model() + flags);
  ASSERT_EQ(out.exit_code, 0) << out.out;
  // Random weights make text that is not always valid UTF-8: --json replaced the invalid bytes,
  // so compare after the same replacement.
  const auto replaced = [](const std::string& t) {
    return nlohmann::json(t).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  };
  EXPECT_EQ(replaced(out.out), replaced(text + "\n"));
  EXPECT_EQ(out.out.find("---"), std::string::npos);
  const Result err = run_ferry_stderr("run " + model() + flags);
  EXPECT_THAT(err.out, HasSubstr("tokens/s"));
  EXPECT_THAT(err.out, HasSubstr("memory per device"));
}

TEST_F(RunCommandFlags, LlamaCppSpellingsMeanTheLongFlags) {
  const nlohmann::json long_form = tokens(
      "--prompt Hello --max-new-tokens 4 --context 64 --threads 1 --temperature 0.8 "
      "--seed 3 --top-k 20");
  EXPECT_EQ(tokens("-p Hello -n 4 -c 64 -t 1 --temp 0.8 --seed 3 --top-k 20"), long_form);
  EXPECT_EQ(long_form.size(), 4U);
  // min-p 1 keeps only the most likely token: sampling at any temperature is then greedy.
  EXPECT_EQ(tokens("-p Hello -n 4 --temp 5 --seed 9 --min-p 1"), tokens("-p Hello -n 4"));
}

TEST_F(RunCommandFlags, UnexpectedArgumentsAreListedInTheOrderGiven) {
  const Result r = run_ferry("run " + model() + " -p Hello zeta alpha --bogus");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("The following arguments were not expected: zeta alpha --bogus"));
}

TEST_F(RunCommandFlags, AContextTooSmallForThePromptIsAnErrorBeforeLoading) {
  const Result r = run_ferry("run " + model() + " --prompt-ids 1,2,3 -n 32 -c 8");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, HasSubstr("ferry: error: --context 8: the longest prompt (3 tokens) plus "
                               "--max-new-tokens (32) needs 35"));
  EXPECT_THAT(r.out, Not(HasSubstr("loading")));
}

TEST_F(RunCommandFlags, AnOutOfVocabularyPromptIdIsAnErrorNamingTheRange) {
  const Result config = run_ferry_stdout("run " + model() + " --prompt-ids 1 -n 1 --json");
  ASSERT_EQ(config.exit_code, 0) << config.out;
  const Result r = run_ferry("run " + model() + " --prompt-ids 1,99999,3");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, HasSubstr("ferry: error: --prompt-ids: token id 99999 is outside the "
                               "vocabulary: expected 0 to 511"));
  EXPECT_THAT(r.out, Not(HasSubstr("loading")));
}

TEST_F(RunCommandFlags, ABudgetThatCannotStageALayerIsAnOutOfBudgetError) {
  // The budget holds the KV cache and activations but not one streamed layer's staging.
  const Result r =
      run_ferry("run " + model() + " --prompt-ids 1,2,3 -n 2 -c 8 --max-memory cpu=300KB");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr("ferry: error: cpu budget of 300000 bytes cannot stage the weights "
                               "that stream through it: the largest layer needs"));
  EXPECT_THAT(r.out, HasSubstr("raise --max-memory cpu, or lower --context/--max-new-tokens"));
}

TEST_F(RunCommandFlags, RunShowsOneLinePerDeviceWithPlacedBudgetAndPeak) {
  const Result r =
      run_ferry_stdout("run " + model() + " --prompt-ids 1,2,3 -n 2 -c 8 --max-memory cpu=700KB");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  for (const std::string device : {"cpu", "disk"}) {
    std::size_t lines = 0;
    std::size_t at = 0;
    while ((at = r.out.find("\n    " + device + " ", at)) != std::string::npos) {
      const std::string line = r.out.substr(at + 1, r.out.find('\n', at + 1) - at - 1);
      if (line.find("placed") != std::string::npos) {
        ++lines;
        EXPECT_THAT(line, HasSubstr("budget"));
        EXPECT_THAT(line, HasSubstr("peak"));
      }
      ++at;
    }
    EXPECT_EQ(lines, 1U) << device << "\n" << r.out;
  }
  EXPECT_TRUE(std::regex_search(
      r.out, std::regex(R"(\n    cpu   placed +[0-9.]+ [KMG]?i?B  budget 683\.59 KiB  peak )")))
      << r.out;
}

TEST_F(RunCommandFlags, TheMetaDeviceNoticeOfAnOffloadedRunIsInfo) {
  const std::string args =
      "run " + model() + " --prompt-ids 1,2,3 -n 2 -c 8 --max-memory cpu=700KB";
  const Result quiet = run_ferry(args);
  ASSERT_EQ(quiet.exit_code, 0) << quiet.out;
  EXPECT_THAT(quiet.out, Not(HasSubstr("meta device")));
  const Result verbose = run_ferry("-v " + args);
  EXPECT_THAT(verbose.out, HasSubstr("[ferry info] Some parameters are on the meta device"));
}

}  // namespace
}  // namespace ferry::cli
