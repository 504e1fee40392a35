#include "ferry/plan/auto_device_map.h"

#include <gtest/gtest.h>

#include <sstream>

#include "ferry/core/log.h"
#include "ferry/nn/containers.h"
#include "plan/plan_test_util.h"

namespace ferry::plan {
namespace {

using testing::budget;
using testing::cpu;
using testing::disk;
using testing::gpu;
using testing::Holder;
using testing::ModelForTest;

std::shared_ptr<Holder> three_models(std::string_view prefix = "") {
  auto model = std::make_shared<Holder>("Sequential");
  for (int i = 0; i < 3; ++i) {
    model->add(fmt::format("{}{}", prefix, prefix.empty() ? i : i + 1),
               std::make_shared<ModelForTest>());
  }
  return model;
}

TEST(InferAutoDeviceMap, KeepsRoomForTheLargestLayerOnGpu0) {
  ModelForTest model;
  LogCapture logs;
  EXPECT_EQ(infer_auto_device_map(model, budget({{"0", "200"}, {"1", "200"}})),
            (DeviceMap{{"linear1", gpu(0)}, {"batchnorm", gpu(1)}, {"linear2", gpu(1)}}));
  EXPECT_FALSE(logs.contains(LogLevel::kInfo, "insufficient memory"));
  // Later GPUs reserve nothing.
  EXPECT_EQ(infer_auto_device_map(model, budget({{"0", "200"}, {"1", "172"}, {"2", "200"}})),
            (DeviceMap{{"linear1", gpu(0)}, {"batchnorm", gpu(1)}, {"linear2", gpu(1)}}));
}

TEST(InferAutoDeviceMap, TiedWeightsLetTheModelFit) {
  // linear1.weight is linear2's (shape [5, 4]) as in Accelerate's test.
  Holder model("ModelForTest");
  auto linear2 = std::make_shared<nn::Linear>(4, 5);
  auto linear1 = model.add("linear1", std::make_shared<Holder>("Linear"));
  linear1->register_tied_parameter("weight", linear2->find_entry("weight")->slot);
  linear1->register_parameter("bias", at::zeros({4}));
  model.add("batchnorm", std::make_shared<nn::BatchNorm1d>(4));
  model.add("linear2", linear2);
  EXPECT_EQ(infer_auto_device_map(model, budget({{"0", "200"}, {"1", "200"}})),
            (DeviceMap{{"", gpu(0)}}));
}

TEST(InferAutoDeviceMap, SplitsAtLayerLevelUnlessNoSplit) {
  auto model = three_models();
  EXPECT_EQ(infer_auto_device_map(*model, budget({{"0", "500"}, {"1", "500"}})),
            (DeviceMap{{"0", gpu(0)},
                       {"1.linear1", gpu(0)},
                       {"1.batchnorm", gpu(0)},
                       {"1.linear2", gpu(1)},
                       {"2", gpu(1)}}));
  EXPECT_EQ(infer_auto_device_map(*model, budget({{"0", "500"}, {"1", "500"}}),
                                  {.no_split_module_classes = {"ModelForTest"}}),
            (DeviceMap{{"0", gpu(0)}, {"1", gpu(1)}, {"2", gpu(1)}}));
  EXPECT_EQ(infer_auto_device_map(*model, budget({{"0", "500"}, {"1", "500"}}),
                                  {.no_split_patterns = {"*"}}),
            (DeviceMap{{"0", gpu(0)}, {"1", gpu(1)}, {"2", gpu(1)}}));
}

TEST(InferAutoDeviceMap, TiedWeightsAcrossLayers) {
  auto model = three_models("layer");
  const auto max_memory = budget({{"0", "400"}, {"1", "500"}});
  testing::tie(*model, "layer3.linear2.weight", "layer1.linear2.weight");
  EXPECT_EQ(infer_auto_device_map(*model, max_memory), (DeviceMap{{"layer1", gpu(0)},
                                                                  {"layer3.linear2", gpu(0)},
                                                                  {"layer2", gpu(1)},
                                                                  {"layer3.linear1", gpu(1)},
                                                                  {"layer3.batchnorm", gpu(1)}}));
  testing::tie(*model, "layer2.linear2.weight", "layer1.linear2.weight");
  EXPECT_EQ(infer_auto_device_map(*model, max_memory), (DeviceMap{{"layer1", gpu(0)},
                                                                  {"layer2.linear2", gpu(0)},
                                                                  {"layer3.linear2", gpu(0)},
                                                                  {"layer2.linear1", gpu(1)},
                                                                  {"layer2.batchnorm", gpu(1)},
                                                                  {"layer3.linear1", gpu(1)},
                                                                  {"layer3.batchnorm", gpu(1)}}));
  testing::tie(*model, "layer2.linear1.weight", "layer1.linear1.weight");
  EXPECT_EQ(infer_auto_device_map(*model, max_memory), (DeviceMap{{"layer1", gpu(0)},
                                                                  {"layer2.linear1", gpu(0)},
                                                                  {"layer2.linear2", gpu(0)},
                                                                  {"layer3.linear2", gpu(0)},
                                                                  {"layer2.batchnorm", gpu(1)},
                                                                  {"layer3.linear1", gpu(1)},
                                                                  {"layer3.batchnorm", gpu(1)}}));
}

TEST(InferAutoDeviceMap, TiedWeightsInOneSequential) {
  Holder model("Sequential");
  model.add("linear1", std::make_shared<nn::Linear>(4, 4));
  model.add("linear2", std::make_shared<nn::Linear>(6, 6));
  model.add("linear3", std::make_shared<nn::Linear>(4, 4));
  model.add("linear4", std::make_shared<nn::Linear>(6, 6));
  testing::tie(model, "linear3.weight", "linear1.weight");
  testing::tie(model, "linear3.bias", "linear1.bias");
  EXPECT_EQ(
      infer_auto_device_map(model, budget({{"0", "250"}, {"1", "400"}})),
      (DeviceMap{
          {"linear1", gpu(0)}, {"linear2", gpu(1)}, {"linear3", gpu(0)}, {"linear4", gpu(1)}}));
}

TEST(InferAutoDeviceMap, TiedNamesSharingAPrefixDoNotCrash) {
  // `compute.weight` tied to `compute.weight_submodule.parameter`.
  Holder model("Model");
  auto compute = model.add("compute", std::make_shared<nn::Linear>(3, 8));
  auto sub = compute->register_module("weight_submodule", std::make_shared<Holder>("SubModule"));
  sub->register_tied_parameter("parameter", compute->find_entry("weight")->slot);
  const DeviceMap map = infer_auto_device_map(model, budget({{"0", "4"}, {"cpu", "96000"}}));
  EXPECT_EQ(map.placement_of("compute.weight"), cpu());
}

TEST(InferAutoDeviceMap, BufferWarningForOffloadedLayers) {
  ModelForTest model;
  model.linear1->register_buffer("test_buffer1", at::zeros({10, 2}));
  model.batchnorm->register_buffer("test_buffer2", at::zeros({10, 3}));
  model.linear2->register_buffer("test_buffer3", at::zeros({10, 3}));
  const DeviceMap expected{{"linear1", gpu(0)}, {"batchnorm", cpu()}, {"linear2", cpu()}};
  {
    LogCapture logs;
    EXPECT_EQ(infer_auto_device_map(model, budget({{"0", "400"}, {"cpu", "1GB"}})), expected);
    EXPECT_TRUE(logs.contains(
        LogLevel::kWarning,
        "Current model requires 280 bytes of buffer for offloaded layers, which seems does not fit "
        "any GPU's remaining memory. If you are experiencing a OOM later, please consider using "
        "offload_buffers=True."));
  }
  LogCapture logs;
  EXPECT_EQ(infer_auto_device_map(model, budget({{"0", "400"}, {"cpu", "1GB"}}),
                                  {.offload_buffers = true}),
            expected);
  EXPECT_FALSE(logs.contains(LogLevel::kWarning, "Current model requires"));
}

TEST(InferAutoDeviceMap, BufferWarningWithSeveralGpus) {
  ModelForTest model;
  model.linear1->register_buffer("test_buffer1", at::zeros({10, 2}));
  model.batchnorm->register_buffer("test_buffer2", at::zeros({10, 3}));
  model.linear2->register_buffer("test_buffer3", at::zeros({10, 3}));
  auto linear3 = model.register_module("linear3", std::make_shared<nn::Linear>(4, 5));
  linear3->register_buffer("test_buffer4", at::zeros({10, 2}));
  const DeviceMap expected{
      {"linear1", gpu(0)}, {"batchnorm", gpu(1)}, {"linear2", cpu()}, {"linear3", cpu()}};
  {
    LogCapture logs;
    EXPECT_EQ(infer_auto_device_map(model, budget({{"0", "400"}, {"1", "400"}, {"cpu", "1GB"}})),
              expected);
    EXPECT_TRUE(logs.entries().empty());
  }
  {
    LogCapture logs;
    EXPECT_EQ(infer_auto_device_map(model, budget({{"0", "400"}, {"1", "200"}, {"cpu", "1GB"}})),
              expected);
    EXPECT_TRUE(logs.contains(LogLevel::kWarning, "Current model requires"));
  }
}

std::shared_ptr<Holder> wrapped(std::int64_t width) {
  auto inner = std::make_shared<Holder>("Sequential");
  if (width == 0) {
    inner->add("linear1", std::make_shared<nn::Linear>(10, 4));
    inner->add("linear2", std::make_shared<nn::Linear>(4, 4));
    inner->add("linear3", std::make_shared<nn::Linear>(4, 8));
  } else {
    for (int i = 1; i <= 3; ++i) {
      inner->add(fmt::format("linear{}", i), std::make_shared<nn::Linear>(width, width));
    }
  }
  auto model = std::make_shared<Holder>("Sequential");
  model->add("module", inner);
  return model;
}

TEST(InferAutoDeviceMap, FallbackAllocation) {
  auto model = wrapped(0);
  {
    LogCapture logs;
    const DeviceMap map = infer_auto_device_map(*model, budget({{"0", "256"}}));
    for (const auto& [name, p] : map.entries()) EXPECT_NE(p, gpu(0)) << name;
    EXPECT_TRUE(logs.contains(
        LogLevel::kInfo,
        "Based on the current allocation process, no modules could be assigned to the following "
        "devices due to insufficient memory:\n  - 0: "));
  }
  LogCapture logs;
  EXPECT_EQ(
      infer_auto_device_map(*model, budget({{"0", "256"}}), {.fallback_allocation = true}),
      (DeviceMap{
          {"module.linear1", disk()}, {"module.linear2", gpu(0)}, {"module.linear3", disk()}}));
  EXPECT_FALSE(logs.contains(LogLevel::kInfo, "insufficient memory"));
}

TEST(InferAutoDeviceMap, FallbackAllocationNoFitAndTies) {
  const DeviceMap none =
      infer_auto_device_map(*wrapped(10), budget({{"0", "30"}}), {.fallback_allocation = true});
  for (const auto& [name, p] : none.entries()) EXPECT_EQ(p, disk()) << name;

  Holder tied("TiedWeightsModel");
  tied.add("linear1", std::make_shared<nn::Linear>(10, 10));
  tied.add("linear2", std::make_shared<nn::Linear>(10, 10));
  testing::tie(tied, "linear2.weight", "linear1.weight");
  EXPECT_EQ(infer_auto_device_map(tied, budget({{"0", "600"}}), {.fallback_allocation = true}),
            (DeviceMap{{"", gpu(0)}}));
}

TEST(InferAutoDeviceMap, FallbackAllocationWithBuffers) {
  Holder model("Sequential");
  model.add("linear1", std::make_shared<nn::Linear>(10, 10))
      ->register_buffer("buffer1", at::zeros({5}));
  model.add("batchnorm", std::make_shared<nn::BatchNorm1d>(10))
      ->register_buffer("buffer2", at::zeros({5}));
  model.add("linear2", std::make_shared<nn::Linear>(10, 10))
      ->register_buffer("buffer3", at::zeros({5}));
  LogCapture logs;
  EXPECT_EQ(infer_auto_device_map(model, budget({{"0", "678"}}), {.fallback_allocation = true}),
            (DeviceMap{{"batchnorm", gpu(0)}, {"linear1", disk()}, {"linear2", disk()}}));
  EXPECT_TRUE(logs.contains(LogLevel::kWarning, "Current model requires"));
}

TEST(InferAutoDeviceMap, VerboseTraceLines) {
  ModelForTest model;
  std::ostringstream trace;
  infer_auto_device_map(model, budget({{"0", "200"}, {"1", "200"}}),
                        {.verbose = true, .trace = &trace});
  EXPECT_EQ(trace.str(),
            "\nTreating module linear1.\n"
            "Putting linear1 (size=64) (available=100) on 0.\n"
            "\nTreating module batchnorm.\n"
            "Not enough space on 0 to put batchnorm (space available 36, module size 72).\n"
            "This module cannot be split, going to the next device.\n"
            "\nTreating module batchnorm.\n"
            "Putting batchnorm (size=72) (available=200) on 1.\n"
            "\nTreating module linear2.\n"
            "Putting linear2 (size=100) (available=128) on 1.\n");
}

TEST(InferAutoDeviceMap, VerboseTraceWithTiesAndSplits) {
  auto model = three_models("layer");
  testing::tie(*model, "layer3.linear2.weight", "layer1.linear2.weight");
  std::ostringstream trace;
  infer_auto_device_map(*model, budget({{"0", "400"}, {"1", "500"}}),
                        {.verbose = true, .trace = &trace});
  const std::string text = trace.str();
  EXPECT_NE(text.find("  Found the relevant tied param groups [['layer1.linear2.weight', "
                      "'layer3.linear2.weight']]\n"),
            std::string::npos);
  EXPECT_NE(text.find("  So those parameters need to be taken into account "
                      "['layer3.linear2.weight']\n"),
            std::string::npos);
  EXPECT_NE(text.find("Putting layer1 and ['layer3.linear2'] (available=300) on 0.\n"),
            std::string::npos);
  EXPECT_NE(text.find("Splitting layer3.\n"), std::string::npos);
}

// Deviation: a split module's own buffers stay in the map (Accelerate drops them, §6 #2).
TEST(InferAutoDeviceMap, SplitModuleKeepsItsDirectBuffers) {
  Holder model("Gemma");
  auto layer = model.add("layer", std::make_shared<Holder>("DecoderLayer"));
  layer->add("mlp", std::make_shared<nn::Linear>(8, 8));
  layer->add("attn", std::make_shared<nn::Linear>(8, 8));
  layer->register_buffer("layer_scalar", at::ones({1}));
  const DevicePlan plan =
      plan_device_map(ModuleTree::from_module(model), budget({{"0", "300"}, {"cpu", "300"}}),
                      {.clean_result = false});
  EXPECT_TRUE(plan.device_map.contains("layer.layer_scalar"));
  check_device_map(model, plan.device_map);  // does not throw
}

TEST(InferAutoDeviceMap, UsageAndMinimumPerDevice) {
  ModelForTest model;
  const DevicePlan plan =
      plan_device_map(ModuleTree::from_module(model), budget({{"0", "50"}, {"cpu", "400"}}));
  EXPECT_EQ(plan.device_map, (DeviceMap{{"", cpu()}}));
  ASSERT_EQ(plan.devices.size(), 3U);
  EXPECT_EQ(plan.devices[1].used_bytes(), 236U);
  EXPECT_FALSE(plan.devices[2].budget_bytes.has_value());
  ASSERT_EQ(plan.min_required_bits.size(), 1U);
  EXPECT_EQ(plan.min_required_bits[0], std::make_pair(gpu(0), std::uint64_t{(64 + 100) * 8}));
  EXPECT_EQ(plan.disk_bytes(), 0U);
}

}  // namespace
}  // namespace ferry::plan
