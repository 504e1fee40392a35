// `ferry make-model` (issue 13): never overwrites a model unless --force, then leaves no old
// shard behind; counts parameters in words; --out must be a folder.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <set>
#include <string>

#include "run_ferry.h"
#include "scratch_dir.h"

namespace ferry::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::Result;
using testing::run_ferry;
using testing::run_ferry_stdout;

std::set<std::string> files_in(const std::filesystem::path& folder) {
  std::set<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(folder)) {
    out.insert(e.path().filename().string());
  }
  return out;
}

TEST(MakeModel, RefusesAFolderHoldingAModelAndForceRemovesTheOldShards) {
  ferry::testing::ScratchDir dir;
  const std::string out = (dir.path() / "m").string();
  // Sharded first (many small shards and an index) ...
  ASSERT_EQ(run_ferry("make-model --max-shard-size 100KB --out " + out).exit_code, 0);
  EXPECT_TRUE(files_in(out).contains("model.safetensors.index.json"));
  const Result again = run_ferry("make-model --out " + out);
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_THAT(again.out, HasSubstr("--out " + out + " holds a model already (config.json and"));
  EXPECT_THAT(again.out, HasSubstr("pass --force to replace it"));
  // ... then one file: with --force, no old shard or index is left beside it.
  const Result forced = run_ferry("make-model --force --out " + out);
  ASSERT_EQ(forced.exit_code, 0) << forced.out;
  EXPECT_THAT(forced.out, HasSubstr("old model file(s) replaced"));
  EXPECT_EQ(files_in(out), (std::set<std::string>{"config.json", "model.safetensors",
                                                  "tokenizer.json", "tokenizer_config.json"}));
  const Result inspected = run_ferry("inspect " + out);
  EXPECT_EQ(inspected.exit_code, 0) << inspected.out;
}

TEST(MakeModel, AnEmptyFolderIsFineAndAFileIsNot) {
  ferry::testing::ScratchDir dir;
  std::filesystem::create_directories(dir.path() / "empty");
  EXPECT_EQ(run_ferry("make-model --out " + (dir.path() / "empty").string()).exit_code, 0);
  const std::string file = (dir.path() / "empty" / "config.json").string();
  const Result r = run_ferry("make-model --out " + file);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, HasSubstr("--out " + file + " is a file: expected a folder"));
}

TEST(MakeModel, CountsParametersInWordsNotBytes) {
  ferry::testing::ScratchDir dir;
  const std::string out = (dir.path() / "m").string();
  const Result r = run_ferry("make-model --out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const nlohmann::json j =
      nlohmann::json::parse(run_ferry_stdout("make-model --force --out " + out + " --json").out);
  const auto n = j["parameters"].get<std::uint64_t>();
  // e.g. "165 K parameters (165312), 645.75 KiB as float32"
  EXPECT_THAT(r.out, HasSubstr(" K parameters (" + std::to_string(n) + "), "));
  EXPECT_THAT(r.out, HasSubstr("KiB as float32"));
}

TEST(MakeModel, ShowsProgressOnATerminalOnly) {
  ferry::testing::ScratchDir dir;
  const std::string args = "make-model --size 4MB --max-shard-size 1MB --out ";
  // util-linux's script(1) gives the command a terminal.
  const std::string command = "script -qec '" + std::string(FERRY_CLI_PATH) + " " + args +
                              (dir.path() / "tty").string() + "' /dev/null 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buffer[4096];
  while (std::size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) out.append(buffer, n);
  ASSERT_EQ(::pclose(pipe), 0) << out;
  EXPECT_THAT(out, HasSubstr("generating [##############################] 100%"));
  EXPECT_THAT(out, HasSubstr("writing [##############################] 100%"));
  // Piped: no bar.
  const Result piped = run_ferry(args + (dir.path() / "pipe").string());
  ASSERT_EQ(piped.exit_code, 0) << piped.out;
  EXPECT_THAT(piped.out, Not(HasSubstr("generating [")));
}

TEST(MakeModel, SizeFlagsFollowTheSizeRules) {
  ferry::testing::ScratchDir dir;
  const Result r = run_ferry("make-model --size 1G --out " + (dir.path() / "m").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, HasSubstr("--size: '1G' is not a size (did you mean 1GiB or 1GB?)"));
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "m"));
}

}  // namespace
}  // namespace ferry::cli
