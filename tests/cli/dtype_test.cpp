// --dtype is the compute dtype (Note [Compute dtype]): float16 and bfloat16 checkpoints run on the
// CPU in float32 by default, auto computes in the stored dtype, unknown or unsupported names fail
// before loading, and `ferry plan` says the compute dtype and counts the weights as held.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "ferry/core/devices.h"
#include "run_ferry.h"
#include "scratch_dir.h"

namespace ferry::cli {
namespace {

using testing::run_ferry;
using testing::run_ferry_stdout;

std::string make(const ferry::testing::ScratchDir& dir, const std::string& dtype) {
  const std::string model = (dir.path() / dtype).string();
  const auto r = run_ferry("make-model --arch llama --seed 3 --dtype " + dtype + " --out " + model);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  return model;
}

TEST(DTypeFlag, Float16AndBfloat16CheckpointsRunOnTheCpuInFloat32) {
  ferry::testing::ScratchDir dir;
  for (const std::string dtype : {"float16", "bfloat16"}) {
    const std::string model = make(dir, dtype);
    const auto r = run_ferry("run " + model + " --prompt Hello -n 2 --ignore-eos");
    EXPECT_EQ(r.exit_code, 0) << dtype << "\n" << r.out;
    EXPECT_NE(r.out.find("computing in float32"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("not implemented"), std::string::npos) << r.out;
  }
}

TEST(DTypeFlag, AutoComputesInTheCheckpointsDType) {
  ferry::testing::ScratchDir dir;
  const std::string model = make(dir, "bfloat16");
  const auto r = run_ferry("run " + model + " --prompt Hello -n 2 --dtype auto");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("computing in bfloat16"), std::string::npos) << r.out;
}

TEST(DTypeFlag, OtherNamesFailBeforeLoadingListingTheAcceptedOnes) {
  ferry::testing::ScratchDir dir;
  const std::string model = make(dir, "float32");
  for (const std::string bad : {"int8", "float64", "garbage"}) {
    for (const std::string& command : {"run " + model + " --prompt-ids 1,2", "plan " + model}) {
      const auto r = run_ferry(command + " --dtype " + bad);
      EXPECT_EQ(r.exit_code, 1) << command << " --dtype " << bad << "\n" << r.out;
      EXPECT_NE(r.out.find("'" + bad + "'"), std::string::npos) << r.out;
      EXPECT_NE(r.out.find("auto, float32, bfloat16, float16"), std::string::npos) << r.out;
      EXPECT_EQ(r.out.find("loading"), std::string::npos) << "loaded first:\n" << r.out;
    }
  }
  if (gpu_count() == 0) {
    // LibTorch has no float16 CPU kernels: refused with a reason, not a crash mid-run.
    const auto r = run_ferry("run " + model + " --prompt-ids 1,2 --dtype float16");
    EXPECT_EQ(r.exit_code, 1) << r.out;
    EXPECT_NE(r.out.find("float16 needs a CUDA GPU"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("loading"), std::string::npos) << "loaded first:\n" << r.out;
  }
}

TEST(DTypeFlag, PlanSaysTheComputeDTypeAndCountsWeightsAsHeld) {
  ferry::testing::ScratchDir dir;
  const std::string f32 = make(dir, "float32");
  const std::string bf16 = make(dir, "bfloat16");
  auto plan = [](const std::string& args) {
    const auto r = run_ferry_stdout("plan --json " + args);
    EXPECT_EQ(r.exit_code, 0) << r.out;
    return nlohmann::json::parse(r.out);
  };
  const auto stored_f32 = plan(f32);
  const auto stored_bf16 = plan(bf16);
  const auto narrowed = plan(f32 + " --dtype bfloat16");
  EXPECT_EQ(stored_f32.at("compute_dtype"), "float32");
  EXPECT_EQ(stored_bf16.at("compute_dtype"), "float32");
  EXPECT_EQ(narrowed.at("compute_dtype"), "bfloat16");
  const auto total = [](const nlohmann::json& j) { return j.at("total_bytes").get<double>(); };
  // A bf16 checkpoint computed in float32 is held (and planned) at bf16 size, as is a float32
  // one narrowed to bfloat16; the float32 checkpoint as stored is twice that.
  EXPECT_NEAR(total(stored_bf16) / total(stored_f32), 0.5, 0.01);
  EXPECT_EQ(total(narrowed), total(stored_bf16));
  // Planned from the headers alone, the same bytes.
  EXPECT_EQ(total(plan(bf16 + " --headers-only")), total(stored_bf16));
  EXPECT_EQ(total(plan(f32 + " --headers-only --dtype bfloat16")), total(narrowed));
}

}  // namespace
}  // namespace ferry::cli
