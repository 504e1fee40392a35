// `ferry plan` run as a process on a Llama-shaped checkpoint: the --json object, the plain
// "does not fit" statement, no split of repeated blocks, and one-line errors for bad budgets.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>

#include "ferry/io/sharded.h"
#include "run_ferry.h"
#include "scratch_dir.h"

namespace ferry::cli {
namespace {

using ::testing::HasSubstr;
using testing::run_ferry;
using testing::run_ferry_stdout;

// 4 layers of 2 × [8, 8] fp32 (512 bytes per layer), embeddings and head [16, 8] (512 bytes each).
std::filesystem::path make_llama_like(const std::filesystem::path& dir) {
  std::vector<std::pair<std::string, at::Tensor>> tensors{
      {"model.embed_tokens.weight", at::zeros({16, 8})}};
  for (int i = 0; i < 4; ++i) {
    const std::string p = "model.layers." + std::to_string(i);
    tensors.emplace_back(p + ".self_attn.q_proj.weight", at::zeros({8, 8}));
    tensors.emplace_back(p + ".mlp.up_proj.weight", at::zeros({8, 8}));
  }
  tensors.emplace_back("model.norm.weight", at::zeros({8}));
  tensors.emplace_back("lm_head.weight", at::zeros({16, 8}));
  io::save_sharded(dir / "model", tensors, {.max_shard_size = Bytes(1024)});
  return dir / "model";
}

TEST(PlanCommand, JsonHasTheDeviceMapAndPerDeviceBytes) {
  ferry::testing::ScratchDir dir;
  const auto model = make_llama_like(dir.path());
  const auto r = run_ferry_stdout("plan --json --strategy sequential --io mmap --max-memory cpu=2000 " +
                                  model.string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto json = nlohmann::json::parse(r.out);
  const auto& map = json.at("device_map");
  bool any_cpu = false;
  bool any_disk = false;
  for (const auto& [key, value] : map.items()) {
    any_cpu |= value == "cpu";
    any_disk |= value == "disk";
    // Repeated numbered blocks are never split by default.
    if (key.starts_with("model.layers.")) {
      EXPECT_EQ(std::count(key.begin(), key.end(), '.'), 2) << key;
    }
  }
  EXPECT_TRUE(any_cpu) << map.dump();
  EXPECT_TRUE(any_disk) << map.dump();
  const auto& cpu = json.at("devices").at("cpu");
  EXPECT_EQ(cpu.at("budget_bytes"), 2000);
  EXPECT_LE(cpu.at("used_bytes").get<std::uint64_t>(), 2000U);
}

TEST(PlanCommand, SaysPlainlyWhenTheModelNeedsDisk) {
  ferry::testing::ScratchDir dir;
  const auto model = make_llama_like(dir.path());
  const auto tight = run_ferry("plan --io mmap --max-memory cpu=2000 " + model.string());
  ASSERT_EQ(tight.exit_code, 0) << tight.out;
  EXPECT_THAT(tight.out, HasSubstr("disk"));
  const auto roomy = run_ferry_stdout("plan --json --max-memory cpu=1GiB " + model.string());
  ASSERT_EQ(roomy.exit_code, 0) << roomy.out;
  const auto json = nlohmann::json::parse(roomy.out);
  for (const auto& [key, value] : json.at("device_map").items()) EXPECT_EQ(value, "cpu") << key;
}

TEST(PlanCommand, BadBudgetsAreOneLineErrors) {
  ferry::testing::ScratchDir dir;
  const auto model = make_llama_like(dir.path());
  const auto bad_size = run_ferry("plan --max-memory cpu=lots " + model.string());
  EXPECT_NE(bad_size.exit_code, 0);
  EXPECT_THAT(bad_size.out, HasSubstr("lots"));
  const auto bad_key = run_ferry("plan --max-memory npu=1GB " + model.string());
  EXPECT_NE(bad_key.exit_code, 0);
  EXPECT_THAT(bad_key.out, HasSubstr("npu"));
  const auto missing = run_ferry("plan " + (dir.path() / "nothing").string());
  EXPECT_NE(missing.exit_code, 0);
}

}  // namespace
}  // namespace ferry::cli
