// `ferry serve` as a process: flags checked before loading, the listening line, FERRY_API_KEY,
// and SIGTERM ending it with status 0. (The HTTP API itself: tests/serve.)
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <csignal>
#include <regex>
#include <string>
#include <thread>

#include "run_ferry.h"
#include "spawn_ferry.h"
#include "tiny_model.h"

namespace ferry::cli {
namespace {

using testing::FerryProcess;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::run_ferry;

using ServeCommand = testing::TinyModel;

// Waits for `pattern` in the process's output (at most 120 s); returns its first group.
std::string wait_for(FerryProcess& p, const std::regex& pattern) {
  for (int i = 0; i < 1200; ++i) {
    std::smatch m;
    const std::string out = p.output();
    if (std::regex_search(out, m, pattern)) return m[1];
    if (!p.running()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ADD_FAILURE() << "not found: the output was\n" << p.output();
  return "";
}

TEST_F(ServeCommand, NonLoopbackWithoutAKeyIsRefusedBeforeLoading) {
  const auto r = run_ferry("serve " + model() + " --host 0.0.0.0");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr("needs an API key"));
  EXPECT_THAT(r.out, Not(HasSubstr("loading")));
}

TEST_F(ServeCommand, BadFlagsAreRefusedBeforeLoading) {
  for (const char* flags : {"--max-batch 0", "--max-queue 0", "--port 70000", "--context 1",
                            "--context 999999", "--max-memory cpu=lots"}) {
    SCOPED_TRACE(flags);
    const auto r = run_ferry("serve " + model() + " " + flags);
    EXPECT_EQ(r.exit_code, 1) << r.out;
    EXPECT_THAT(r.out, Not(HasSubstr("listening")));
  }
  const auto help = run_ferry("serve --help");
  EXPECT_EQ(help.exit_code, 0) << help.out;
  for (const char* flag : {"--host", "--port", "--api-key", "--max-batch", "--max-queue",
                           "--context", "--max-memory", "--device-map", "--offload-folder"}) {
    EXPECT_THAT(help.out, HasSubstr(flag));
  }
}

// A budget that cannot hold the KV cache of --max-batch sequences names the flags that size it.
TEST_F(ServeCommand, ABudgetTooSmallForTheBatchNamesMaxBatch) {
  const auto r = run_ferry("serve " + model() +
                           " --max-memory cpu=4MB --max-batch 4096 --context 64 --no-progress");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr("reserves the KV cache of --max-batch 4096 sequences of --context "
                               "64 tokens"));
  EXPECT_THAT(r.out, Not(HasSubstr("listening")));
}

TEST_F(ServeCommand, ListensWithTheKeyFromTheEnvironmentAndStopsOnSigterm) {
  FerryProcess p({"serve", model(), "--host", "0.0.0.0", "--port", "0", "--max-batch", "2",
                  "--context", "128", "--json"},
                 {"FERRY_API_KEY=sekrit"}, path("serve.log"));
  const std::string port = wait_for(p, std::regex(R"re("port": ([0-9]+))re"));
  ASSERT_FALSE(port.empty());
  EXPECT_NE(port, "0");
  EXPECT_THAT(p.output(), HasSubstr(R"("url": "http://0.0.0.0:)"));
  p.signal(SIGTERM);
  const int status = p.wait();
  ASSERT_TRUE(WIFEXITED(status)) << p.output();
  EXPECT_EQ(WEXITSTATUS(status), 0) << p.output();
  EXPECT_THAT(p.output(), HasSubstr("ferry serve: stopped"));
}

TEST_F(ServeCommand, PrintsTheListeningLineAndStopsOnSigint) {
  FerryProcess p({"serve", model(), "--port", "0", "--context", "64"}, {}, path("serve.log"));
  const std::string url = wait_for(p, std::regex(R"(ferry serve: listening on (http://\S+))"));
  EXPECT_TRUE(url.starts_with("http://127.0.0.1:")) << url;
  p.signal(SIGINT);
  const int status = p.wait();
  ASSERT_TRUE(WIFEXITED(status)) << p.output();
  EXPECT_EQ(WEXITSTATUS(status), 0) << p.output();
}

}  // namespace
}  // namespace ferry::cli
