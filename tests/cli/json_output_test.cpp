// `--json` on every command (issue 13): one object on stdout with a schema_version, and under
// --json errors are JSON objects on stdout too (docs/cli.md, "JSON output").
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>

#include "run_ferry.h"
#include "tiny_model.h"

namespace ferry::cli {
namespace {

using ::testing::HasSubstr;
using testing::Result;
using testing::run_ferry_stdout;

class JsonOutput : public testing::TinyModel {};

TEST_F(JsonOutput, EveryCommandPrintsOneObjectWithASchemaVersion) {
  const std::vector<std::pair<std::string, std::string>> commands{
      {"inspect", "inspect " + model()},
      {"plan", "plan " + model()},
      {"run", "run " + model() + " --prompt-ids 1,2 -n 2"},
      {"make-model", "make-model --arch gpt2 --out " + path("gpt2")},
      {"demo", "demo --layers 10 --width 100"}};
  for (const auto& [command, args] : commands) {
    const Result r = run_ferry_stdout(args + " --json");
    ASSERT_EQ(r.exit_code, 0) << args << "\n" << r.out;
    const nlohmann::json j = nlohmann::json::parse(r.out);  // stdout is the object alone
    EXPECT_EQ(j["schema_version"], 1) << command;
    EXPECT_EQ(j["command"], command);
  }
  const nlohmann::json made = nlohmann::json::parse(
      run_ferry_stdout("make-model --arch llama --layers 3 --out " + path("three") + " --json")
          .out);
  EXPECT_EQ(made["layers"], 3);
  EXPECT_GT(made["parameters"].get<std::uint64_t>(), 0U);
  EXPECT_EQ(made["size_bytes"], made["parameters"].get<std::uint64_t>() * 4);
  EXPECT_EQ(nlohmann::json::parse(
                run_ferry_stdout("demo --layers 10 --width 100 --json").out)["parameters"],
            10 * (100 * 100 + 100));
}

TEST_F(JsonOutput, ErrorsUnderJsonAreObjectsOnStdout) {
  const Result bad_flag = run_ferry_stdout("run " + model() + " -p Hi --temp -1 --json");
  EXPECT_EQ(bad_flag.exit_code, 1);
  const nlohmann::json e = nlohmann::json::parse(bad_flag.out);
  EXPECT_EQ(e["schema_version"], 1);
  EXPECT_EQ(e["error"]["type"], "InvalidArgument");
  EXPECT_EQ(e["error"]["message"], "--temperature: expected 0 (greedy) or more, got -1");
  EXPECT_EQ(e["error"]["exit_code"], 1);

  const Result missing = run_ferry_stdout("inspect " + path("absent") + " --json");
  EXPECT_EQ(missing.exit_code, 1);
  const nlohmann::json m = nlohmann::json::parse(missing.out);
  EXPECT_EQ(m["error"]["type"], "IoError");
  EXPECT_THAT(m["error"]["message"].get<std::string>(), HasSubstr("does not exist"));
  EXPECT_EQ(m["error"]["file"], path("absent"));
  EXPECT_EQ(m["error"]["actual"], "nothing");

  // A command line that cannot be parsed is a usage error, with CLI11's exit code.
  const Result usage = run_ferry_stdout("plan " + model() + " --json --bogus");
  EXPECT_EQ(usage.exit_code, 109);
  const nlohmann::json u = nlohmann::json::parse(usage.out);
  EXPECT_EQ(u["error"]["type"], "UsageError");
  EXPECT_THAT(u["error"]["message"].get<std::string>(), HasSubstr("--bogus"));
  EXPECT_EQ(u["error"]["exit_code"], 109);

  // Without --json, errors stay one line on stderr.
  EXPECT_EQ(run_ferry_stdout("inspect " + path("absent")).out, "");
}

}  // namespace
}  // namespace ferry::cli
