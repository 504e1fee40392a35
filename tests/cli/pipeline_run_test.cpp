// `ferry run` over pipeline stages in separate processes (issue 16): under `ferry launch` with 2
// and 3 ranks on 127.0.0.1, the greedy tokens of a batch equal the single-process run's, also
// with micro-batches, a stage that offloads to disk and a stage on a simulated GPU; a rank
// killed mid-generation makes the others fail, naming it, well within the timeout.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <httplib.h>
#include <regex>
#include <string>
#include <thread>

#include "ports.h"
#include "process_watch.h"
#include "run_ferry.h"
#include "scratch_dir.h"
#include "spawn_ferry.h"

namespace ferry::cli {
namespace {

using namespace std::chrono_literals;
using testing::FerryProcess;
using ::testing::HasSubstr;
using testing::Result;
using testing::run_ferry;
using testing::run_ferry_bounded;

// A 4-layer llama, made once.
const std::filesystem::path& model() {
  static ferry::testing::ScratchDir dir;
  static const bool made = [] {
    const Result r = run_ferry(fmt::format(
        "make-model --layers 4 --hidden 64 --heads 4 --kv-heads 2 --intermediate 128 --seed 3 "
        "--out {} --no-progress",
        dir.path().string()));
    EXPECT_EQ(r.exit_code, 0) << r.out;
    return true;
  }();
  (void)made;
  return dir.path();
}

const std::string kPrompts = "--prompt-ids 5,6,7,8 --prompt-ids 9,10 --prompt-ids 300,2,2,2,2,2";

// The token ids of every prompt of `ferry [launch ... --] run ...`'s JSON.
std::vector<std::vector<std::int64_t>> outputs_of(const std::string& command,
                                                  std::string* json_out = nullptr,
                                                  const std::string& env = "") {
  const Result r = testing::run_ferry_redirected(command, "2>/dev/null", env + "timeout 240 ");
  EXPECT_EQ(r.exit_code, 0) << command << "\n" << r.out;
  if (json_out) *json_out = r.out;
  std::vector<std::vector<std::int64_t>> tokens;
  try {
    const nlohmann::json j = nlohmann::json::parse(r.out);  // alive for the loop
    for (const auto& o : j.at("outputs")) {
      tokens.push_back(o.at("token_ids").get<std::vector<std::int64_t>>());
    }
  } catch (const std::exception& e) {
    ADD_FAILURE() << command << ": " << e.what() << "\n" << r.out;
  }
  return tokens;
}

std::string run_args(const std::string& extra = "") {
  return fmt::format("run {} {} --max-new-tokens 10 --ignore-eos --json --no-progress {}",
                     model().string(), kPrompts, extra);
}

TEST(PipelineRun, TwoAndThreeRanksGiveTheSingleProcessTokens) {
  std::string alone_json;
  const auto alone = outputs_of(run_args(), &alone_json);
  ASSERT_EQ(alone.size(), 3u) << alone_json;
  for (const int n : {2, 3}) {
    for (const int micro : {1, 2}) {
      SCOPED_TRACE(fmt::format("{} ranks, {} micro-batches", n, micro));
      std::string json;
      EXPECT_EQ(outputs_of(fmt::format("launch --nproc {} --timeout 60 -- {}", n,
                                       run_args(fmt::format("--micro-batches {}", micro))),
                           &json),
                alone);
      const auto pipeline = nlohmann::json::parse(json).at("pipeline");
      EXPECT_EQ(pipeline.at("world_size"), n);
      EXPECT_EQ(pipeline.at("stages").size(), static_cast<std::size_t>(n));
      EXPECT_EQ(pipeline.at("stages").back().at(1), 4);
    }
  }
}

TEST(PipelineRun, AStageOnDiskAndAStageOnASimulatedGpu) {
  const auto alone = outputs_of(run_args());
  ferry::testing::ScratchDir offload;
  // Room for the reserves and hardly a layer: rank 1's layers rest on disk.
  const std::string disk = fmt::format("launch --nproc 2 --timeout 60 -- {}",
                                       run_args(fmt::format("--max-memory cpu=10.9MiB "
                                                            "--offload-folder {}",
                                                            offload.path().string())));
  EXPECT_EQ(outputs_of(disk), alone);
  const Result shown = run_ferry_bounded(240, disk, "2>&1 >/dev/null");
  EXPECT_THAT(shown.out, HasSubstr("rank 1 of 2: layers"));
  EXPECT_THAT(shown.out, ::testing::ContainsRegex("disk +[0-9]+ module"));
  // A simulated GPU with room for rank 0's stage.
  std::string json;
  EXPECT_EQ(outputs_of(fmt::format("launch --nproc 2 --timeout 60 -- {}",
                                   run_args("--max-memory 0=12MiB,cpu=10.9MiB")),
                       &json, "FERRY_SIM_GPUS=1 "),
            alone);
  EXPECT_EQ(nlohmann::json::parse(json).at("device_map").dump(), R"({"":0})");
}

TEST(PipelineRun, RankKeysGiveEachRankItsBudget) {
  // Rank 1 with much more memory than rank 0 holds more layers.
  std::string json;
  outputs_of(fmt::format("launch --nproc 2 --timeout 60 -- {}",
                         run_args("--max-memory cpu=60MiB,rank1:cpu=600MiB")),
             &json);
  const auto stages = nlohmann::json::parse(json).at("pipeline").at("stages");
  EXPECT_GT(stages.at(1).at(1).get<int>() - stages.at(1).at(0).get<int>(),
            stages.at(0).at(1).get<int>() - stages.at(0).at(0).get<int>())
      << stages.dump();
}

TEST(PipelineRun, AKilledRankIsNamedByTheOthersWithinTheTimeout) {
  testing::adopt_orphans();
  ferry::testing::ScratchDir dir;
  const ferry::testing::ReservedPort reserved;
  const std::uint16_t port = reserved.port();
  auto env = [&](int rank) {
    return std::vector<std::string>{
        "MASTER_ADDR=127.0.0.1",      fmt::format("MASTER_PORT={}", port), "WORLD_SIZE=3",
        fmt::format("RANK={}", rank), fmt::format("LOCAL_RANK={}", rank),  "FERRY_DIST_TIMEOUT=60"};
  };
  // Long enough that rank 1 dies mid-generation.
  const std::vector<std::string> args{"run",          model().string(),   "--prompt-ids",
                                      "5,6,7",        "--max-new-tokens", "2000",
                                      "--ignore-eos", "--no-progress"};
  std::vector<std::unique_ptr<FerryProcess>> ranks;
  for (int r = 0; r < 3; ++r) {
    ranks.push_back(
        std::make_unique<FerryProcess>(args, env(r), dir.path() / fmt::format("rank{}.log", r)));
  }
  // Wait until rank 0 streams tokens, then kill rank 1.
  const auto start = testing::Clock::now();
  while (ranks[0]->output().find("---") == std::string::npos &&
         testing::Clock::now() - start < 120s && ranks[0]->running()) {
    std::this_thread::sleep_for(50ms);
  }
  std::this_thread::sleep_for(300ms);
  ASSERT_TRUE(ranks[0]->running()) << ranks[0]->output();
  ranks[1]->signal(SIGKILL);
  const auto killed = testing::Clock::now();
  for (int r : {0, 2}) {
    EXPECT_TRUE(testing::wait_for_exit(*ranks[r], 40s)) << "rank " << r << " still runs";
    const int status = ranks[r]->wait();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << ranks[r]->output();
    if (r == 0) {
      EXPECT_THAT(ranks[r]->output(), HasSubstr("rank 1"));
    } else {
      // Rank 2 names the rank it lost: rank 1 when it was waiting for rank 1's hidden states,
      // rank 0 (which stopped on losing rank 1) when it was waiting for the next step.
      EXPECT_THAT(ranks[r]->output(), ::testing::ContainsRegex("rank 1|lost rank 0"));
    }
  }
  EXPECT_LT(testing::Clock::now() - killed, 40s);  // the timeout is 60 s: death is seen first
  ranks[1]->wait();
}

// The port `ferry serve` printed in `p`'s output, once it listens ("" if it never did).
std::string listening_port(FerryProcess& p) {
  const std::regex line(R"(ferry serve: listening on http://127\.0\.0\.1:([0-9]+))");
  for (int i = 0; i < 1200 && p.running(); ++i) {
    std::smatch m;
    const std::string out = p.output();
    if (std::regex_search(out, m, line)) return m[1];
    std::this_thread::sleep_for(100ms);
  }
  return "";
}

// Greedy completions of a few prompts, sent at once (they share batches).
std::vector<std::string> completions(const std::string& port) {
  const std::vector<std::string> prompts{"hello there", "a b c", "the quick brown fox"};
  std::vector<std::string> texts(prompts.size());
  std::vector<std::thread> clients;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    clients.emplace_back([&, i] {
      httplib::Client client("127.0.0.1", std::stoi(port));
      client.set_read_timeout(120, 0);
      const nlohmann::json body{
          {"prompt", prompts[i]}, {"max_tokens", 8}, {"temperature", 0}, {"ignore_eos", true}};
      const auto r = client.Post("/v1/completions", body.dump(), "application/json");
      if (r && r->status == 200) {
        texts[i] = nlohmann::json::parse(r->body).at("choices").at(0).at("text");
      } else {
        texts[i] = "request failed";
      }
    });
  }
  for (auto& c : clients) c.join();
  return texts;
}

TEST(PipelineServe, AnswersAsTheSingleProcessServerAndStopsOnSigterm) {
  testing::adopt_orphans();
  ferry::testing::ScratchDir dir;
  FerryProcess alone(
      {"serve", model().string(), "--port", "0", "--max-batch", "4", "--no-progress"}, {},
      dir.path() / "alone.log");
  const std::string alone_port = listening_port(alone);
  ASSERT_FALSE(alone_port.empty()) << alone.output();
  const std::vector<std::string> expected = completions(alone_port);
  for (const std::string& text : expected) EXPECT_NE(text, "request failed");
  alone.signal(SIGTERM);
  alone.wait();
  FerryProcess launched({"launch", "--nproc", "2", "--timeout", "60", "--", "serve",
                         model().string(), "--port", "0", "--max-batch", "4", "--no-progress"},
                        {}, dir.path() / "launch.log");
  const std::string port = listening_port(launched);
  ASSERT_FALSE(port.empty()) << launched.output();
  EXPECT_EQ(completions(port), expected);
  EXPECT_THAT(launched.output(), HasSubstr("pipeline over 2 ranks"));
  launched.signal(SIGTERM);
  ASSERT_TRUE(testing::wait_for_exit(launched, 60s)) << launched.output();
  const int status = launched.wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << launched.output();
  EXPECT_THAT(testing::children_of_this_process(), ::testing::IsEmpty());
}

}  // namespace
}  // namespace ferry::cli
