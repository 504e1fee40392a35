// One plan, kept (issue 11): `ferry plan` and `ferry run` given the same flags make the same
// device map, and a run keeps every device within its budget — checked over random budgets,
// models and flags, with simulated GPUs whose capacity is exactly their budget.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "run_ferry.h"
#include "scratch_dir.h"

namespace ferry::cli {
namespace {

using testing::run_ferry;
using testing::run_ferry_stdout;

std::string kib(std::uint64_t n) { return std::to_string(n) + "KiB"; }

class OnePlan : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const auto& [name, arch] : {std::pair{"llama", "llama"}, std::pair{"gpt2", "gpt2"}}) {
      const auto made = run_ferry(std::string("make-model --arch ") + arch + " --seed 3 --out " +
                                  (dir_.path() / name).string());
      ASSERT_EQ(made.exit_code, 0) << made.out;
    }
  }
  ferry::testing::ScratchDir dir_;
};

TEST_F(OnePlan, PlanAndRunMakeTheSameMapAndRunsKeepTheirBudgets) {
  std::mt19937 rng(11);
  const std::vector<std::string> extra_flags = {"",
                                                "--no-prefetch",
                                                "--io buffered",
                                                "--io mmap",
                                                "--dtype bfloat16",
                                                "--prefetch-bytes 512KiB",
                                                "--device-map sequential",
                                                "--device-map balanced",
                                                "--context 64",
                                                "--reserve cpu=100KiB"};
  int with_gpus = 0;
  int with_disk = 0;
  int refused = 0;
  for (int round = 0; round < 14; ++round) {
    const std::string model = (dir_.path() / (round % 3 == 2 ? "gpt2" : "llama")).string();
    const std::string flags = extra_flags[rng() % extra_flags.size()];
    const bool gpus = rng() % 2 == 0;
    std::string env;
    std::string budgets = "cpu=" + kib(700 + rng() % 3000);
    if (gpus) {
      const std::uint64_t g0 = 600 + rng() % 1500;
      const std::uint64_t g1 = 300 + rng() % 1500;
      // Each simulated GPU's capacity is its budget: going over it is an out-of-memory error.
      env = kib(g0) + "," + kib(g1);
      budgets = "0=" + kib(g0) + ",1=" + kib(g1) + "," + budgets;
    }
    // The children inherit it (popen).
    if (gpus) {
      ::setenv("FERRY_SIM_GPUS", env.c_str(), 1);
    } else {
      ::unsetenv("FERRY_SIM_GPUS");
    }
    const std::string context = flags.find("--context") == std::string::npos ? " --context 16" : "";
    const std::string common =
        "--max-memory " + budgets + " --max-new-tokens 6 " + flags + context;
    const auto planned = run_ferry("plan " + model + " --json " + common);
    const auto ran = run_ferry("run " + model +
                               " --prompt-ids 1,2,3,4 --ignore-eos --json " + common);
    if (planned.exit_code != 0) {
      // A budget too small to stream through is refused by both, with the same message.
      ++refused;
      EXPECT_EQ(planned.exit_code, 1) << planned.out;
      EXPECT_EQ(ran.exit_code, 1) << ran.out;
      const auto line = planned.out.substr(planned.out.find("ferry: error:"));
      EXPECT_NE(ran.out.find(line.substr(0, line.find('\n'))), std::string::npos)
          << planned.out << "\n" << ran.out;
      continue;
    }
    const auto plan = nlohmann::json::parse(planned.out.substr(planned.out.find('{')));
    ASSERT_EQ(plan["planned_from"], "model");
    ASSERT_EQ(ran.exit_code, 0) << "FERRY_SIM_GPUS=" << env << " " << common << "\n" << ran.out;
    const auto run = nlohmann::json::parse(ran.out.substr(ran.out.find('{')));
    EXPECT_EQ(run["device_map"], plan["device_map"]) << "FERRY_SIM_GPUS=" << env << " " << common;
    EXPECT_EQ(run["token_ids"].size(), 6U) << common;
    EXPECT_TRUE(run["over_budget"].empty()) << "FERRY_SIM_GPUS=" << env << " " << common << "\n" << run["devices"].dump(1);
    for (const auto& [device, d] : run["devices"].items()) {
      if (device == "disk" || d["budget_bytes"].is_null()) continue;
      EXPECT_LE(d["peak_bytes"].get<std::uint64_t>(), d["limit_bytes"].get<std::uint64_t>())
          << device << " " << "FERRY_SIM_GPUS=" << env << " " << common;
    }
    // What the plan reserved for staging is what the prefetcher was given.
    if (run.contains("prefetch")) {
      EXPECT_EQ(run["prefetch"]["host_budget_bytes"], plan["staging"]["host_bytes"]) << common;
    }
    with_gpus += gpus ? 1 : 0;
    with_disk += plan["disk_bytes"].get<std::uint64_t>() > 0 ? 1 : 0;
  }
  ::unsetenv("FERRY_SIM_GPUS");
  EXPECT_GT(with_gpus, 0);
  EXPECT_GT(with_disk, 0);
  EXPECT_LT(refused, 7);  // most random budgets are usable
}

// --quantize int8: the plan counts the int8 values and scales, and the run keeps that plan.
TEST_F(OnePlan, QuantizedPlanCountsInt8BytesAndTheRunKeepsIt) {
  const std::string model = (dir_.path() / "llama").string();
  const std::string common = " --json --max-memory cpu=400KiB --context 16 --max-new-tokens 6";
  const auto f32 = run_ferry_stdout("plan " + model + common);
  const auto planned = run_ferry_stdout("plan " + model + common + " --quantize int8");
  ASSERT_EQ(f32.exit_code, 0) << f32.out;
  ASSERT_EQ(planned.exit_code, 0) << planned.out;
  const auto plan = nlohmann::json::parse(planned.out);
  const auto full = nlohmann::json::parse(f32.out);
  // Each weight of a decoder Linear counts 1.0625 bytes instead of 4 (the exact count is checked
  // by models' quantize_test).
  EXPECT_LT(plan["total_bytes"].get<std::uint64_t>(), full["total_bytes"].get<std::uint64_t>());
  EXPECT_LT(plan["disk_bytes"].get<std::uint64_t>(), full["disk_bytes"].get<std::uint64_t>());
  const auto ran = run_ferry_stdout("run " + model + " --prompt-ids 1,2,3,4 --ignore-eos" + common +
                                    " --quantize int8");
  ASSERT_EQ(ran.exit_code, 0) << ran.out;
  const auto run = nlohmann::json::parse(ran.out);
  EXPECT_EQ(run["device_map"], plan["device_map"]);
  EXPECT_EQ(run["token_ids"].size(), 6U);
  EXPECT_TRUE(run["over_budget"].empty()) << run["devices"].dump(1);
  // Both say what they planned and ran.
  EXPECT_EQ(plan["quantize"], "int8");
  EXPECT_EQ(run["quantize"], "int8");
  EXPECT_EQ(full["quantize"], "none");
}

TEST_F(OnePlan, AnUnknownQuantizationIsRefusedBeforeLoadingListingTheAcceptedOnes) {
  const std::string model = (dir_.path() / "llama").string();
  for (const std::string& command : {"plan " + model, "run " + model + " --prompt-ids 1,2"}) {
    for (const char* value : {"int4", "garbage"}) {
      const auto r = run_ferry(command + " --quantize " + value);
      EXPECT_EQ(r.exit_code, 1) << r.out;
      EXPECT_NE(r.out.find(std::string("--quantize: '") + value +
                           "' is not supported (accepted: int8)"),
                std::string::npos)
          << r.out;
    }
  }
  // Headers alone do not say which weights are a decoder block's Linear layers.
  const auto headers = run_ferry("plan " + model + " --headers-only --quantize int8");
  EXPECT_EQ(headers.exit_code, 1) << headers.out;
  EXPECT_NE(headers.out.find("expected a model folder"), std::string::npos) << headers.out;
}

TEST_F(OnePlan, PlanJsonIsAcceptedAsTheRunsDeviceMap) {
  const std::string model = (dir_.path() / "llama").string();
  const auto planned =
      run_ferry_stdout("plan " + model + " --json --max-memory cpu=1MiB --context 16 --device-map sequential");
  ASSERT_EQ(planned.exit_code, 0) << planned.out;
  const std::filesystem::path file = dir_.path() / "plan.json";
  {
    std::FILE* f = std::fopen(file.c_str(), "w");
    std::fwrite(planned.out.data(), 1, planned.out.size(), f);
    std::fclose(f);
  }
  const auto ran = run_ferry_stdout("run " + model + " --prompt-ids 1,2 --max-new-tokens 2 --json "
                                    "--device-map " + file.string());
  ASSERT_EQ(ran.exit_code, 0) << ran.out;
  EXPECT_EQ(nlohmann::json::parse(ran.out)["device_map"],
            nlohmann::json::parse(planned.out)["device_map"]);
}

TEST_F(OnePlan, PlanShowsEveryReserveAsARow) {
  const std::string model = (dir_.path() / "llama").string();
  const auto r = run_ferry("plan " + model + " --max-memory cpu=700KiB --context 16");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  for (const char* row : {"- kv cache", "- activations", "- staging", "- weights", "= headroom"}) {
    EXPECT_NE(r.out.find(row), std::string::npos) << row << "\n" << r.out;
  }
  // A longer context reserves more KV cache, leaving less for weights.
  const auto small = nlohmann::json::parse(
      run_ferry_stdout("plan " + model + " --json --max-memory cpu=8MiB --context 16").out);
  const auto large = nlohmann::json::parse(
      run_ferry_stdout("plan " + model + " --json --max-memory cpu=8MiB --context 1024").out);
  EXPECT_LT(small["devices"]["cpu"]["reserves"]["kv cache"].get<std::uint64_t>(),
            large["devices"]["cpu"]["reserves"]["kv cache"].get<std::uint64_t>());
  EXPECT_GE(small["devices"]["cpu"]["used_bytes"].get<std::uint64_t>(),
            large["devices"]["cpu"]["used_bytes"].get<std::uint64_t>());
}

}  // namespace
}  // namespace ferry::cli
