// The front end (Note [Front end and engine] in src/cli/commands.h): `ferry --help`, `inspect`
// and `plan` on headers run without LibTorch and without the engine; commands that compute are
// handed to the engine with their standard streams, exit status and JSON errors intact.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "ferry/io/sharded.h"
#include "run_ferry.h"
#include "scratch_dir.h"

namespace ferry::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::Result;
using testing::run_ferry;
using testing::run_ferry_redirected;
using testing::run_ferry_stdout;

// Runs `ferry ARGS` with no engine to hand over to: what still works needs none.
Result without_engine(const std::string& args) {
  return run_ferry_redirected(args, "2>&1", "FERRY_ENGINE=/nonexistent/ferry-engine ");
}

std::filesystem::path engine_program() {
  return std::filesystem::path(FERRY_CLI_PATH).parent_path() / "ferry-engine";
}

std::filesystem::path write_headers_checkpoint(const std::filesystem::path& dir) {
  std::vector<std::pair<std::string, at::Tensor>> tensors{
      {"model.embed_tokens.weight", at::zeros({128, 64})}};
  for (int i = 0; i < 12; ++i) {
    const std::string p = "model.layers." + std::to_string(i);
    tensors.emplace_back(p + ".self_attn.q_proj.weight", at::zeros({64, 64}));
    tensors.emplace_back(p + ".mlp.up_proj.weight", at::zeros({64, 64}));
  }
  tensors.emplace_back("lm_head.weight", at::zeros({128, 64}));
  io::save_sharded(dir / "model", tensors, {.max_shard_size = Bytes(100 << 10)});
  return dir / "model";
}

TEST(FrontEnd, DoesNotLinkTheTensorEngine) {
  // What the dynamic loader would load for `ferry` (ldd's own mechanism).
  const Result r = run_ferry_redirected("", "2>&1", "LD_TRACE_LOADED_OBJECTS=1 ");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("libc.so"));  // the listing is there
  EXPECT_THAT(r.out, Not(HasSubstr("libtorch")));
  EXPECT_THAT(r.out, Not(HasSubstr("libc10")));
  EXPECT_THAT(r.out, Not(HasSubstr("blas")));
}

TEST(FrontEnd, HelpInspectAndHeaderPlansNeedNoEngine) {
  ferry::testing::ScratchDir dir;
  const auto model = write_headers_checkpoint(dir.path());
  Result r = without_engine("--help");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  for (const char* command : {"demo", "inspect", "plan", "make-model", "run"}) {
    EXPECT_THAT(r.out, HasSubstr(command));
  }
  r = without_engine("--version");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("ferry 0.1.0"));
  r = without_engine("inspect " + model.string());
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("model.layers.11.mlp.up_proj.weight"));
  EXPECT_THAT(r.out, HasSubstr("validation: OK"));
  r = without_engine("plan " + model.string() + " --max-memory cpu=300KiB --io mmap");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("planned from the headers"));
  r = without_engine("plan --help");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("--max-memory"));
}

TEST(FrontEnd, HeaderPlanIsTheEnginesPlan) {
  ferry::testing::ScratchDir dir;
  const auto model = write_headers_checkpoint(dir.path());
  const std::string args =
      "plan --json --io buffered --max-memory cpu=300KiB --reserve 1000 " + model.string();
  const Result front = run_ferry_stdout(args);
  ASSERT_EQ(front.exit_code, 0) << front.out;
  const std::string engine_command = engine_program().string() + " " + args + " 2>/dev/null";
  Result engine;
  {
    FILE* pipe = ::popen(engine_command.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    char buffer[4096];
    for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) {
      engine.out.append(buffer, n);
    }
    engine.exit_code = WEXITSTATUS(::pclose(pipe));
  }
  ASSERT_EQ(engine.exit_code, 0) << engine.out;
  nlohmann::json a = nlohmann::json::parse(front.out);
  nlohmann::json b = nlohmann::json::parse(engine.out);
  a.erase("plan_ms");
  b.erase("plan_ms");
  EXPECT_EQ(a, b);
  EXPECT_GT(a.at("disk_bytes").get<std::uint64_t>(), 0U);  // the budget forces a real plan
}

TEST(FrontEnd, ComputingCommandsAreHandedToTheEngine) {
  // Through the front end, the engine's answers and exit codes come back unchanged.
  Result r = run_ferry("demo --layers 3 --width 64");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("parameters"));
  r = run_ferry_stdout("run /nonexistent/model -p hi --json");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out).at("error").at("type"), "IoError") << r.out;
  EXPECT_THAT(r.out, HasSubstr("MODEL /nonexistent/model does not exist"));
  r = run_ferry("run --help");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("--prompt"));
}

// Note [Threads that wait without spinning]: the engine's OpenMP threads spin briefly, unless the
// user chose how they wait. The engine here is a script that prints what it was given.
TEST(FrontEnd, TheEngineGetsAShortOpenMpSpinUnlessTheUserChoseOne) {
  ferry::testing::ScratchDir dir;
  const std::filesystem::path engine = dir / "ferry-engine";
  {
    std::ofstream script(engine);
    script << "#!/bin/sh\necho \"spin=[$GOMP_SPINCOUNT] policy=[$OMP_WAIT_POLICY]\"\n";
  }
  std::filesystem::permissions(engine, std::filesystem::perms::owner_all);
  const std::string with = "FERRY_ENGINE=" + engine.string() + " ";
  EXPECT_THAT(
      run_ferry_redirected("run x", "2>&1", "env -u GOMP_SPINCOUNT -u OMP_WAIT_POLICY " + with).out,
      HasSubstr("spin=[10000] policy=[]"));
  EXPECT_THAT(
      run_ferry_redirected("run x", "2>&1", "env -u OMP_WAIT_POLICY GOMP_SPINCOUNT=5 " + with).out,
      HasSubstr("spin=[5] policy=[]"));
  EXPECT_THAT(
      run_ferry_redirected("run x", "2>&1", "env -u GOMP_SPINCOUNT OMP_WAIT_POLICY=active " + with)
          .out,
      HasSubstr("spin=[] policy=[active]"));
}

TEST(FrontEnd, AMissingEngineIsAClearError) {
  Result r = without_engine("demo");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr("cannot start ferry's engine /nonexistent/ferry-engine"));
  r = run_ferry_redirected("demo --json", "2>/dev/null", "FERRY_ENGINE=/nonexistent/ferry-engine ");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out).at("error").at("type"), "IoError") << r.out;
}

}  // namespace
}  // namespace ferry::cli
