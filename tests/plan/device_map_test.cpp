#include "ferry/plan/device_map.h"

#include <gtest/gtest.h>

#include "ferry/core/error.h"
#include "ferry/core/log.h"
#include "ferry/plan/resolve.h"
#include "plan/plan_test_util.h"

namespace ferry::plan {
namespace {

using testing::cpu;
using testing::disk;
using testing::gpu;
using testing::ModelForTest;

TEST(DeviceMapValue, UsesTellsWhetherAPlacementHoldsAnything) {
  const DeviceMap map{{"a", Placement::gpu(1)}, {"b", Placement::cpu()}};
  EXPECT_TRUE(map.uses(Placement::gpu(1)));
  EXPECT_TRUE(map.uses(Placement::cpu()));
  EXPECT_FALSE(map.uses(Placement::disk()));
  EXPECT_FALSE(map.uses(Placement::gpu(0)));
  EXPECT_FALSE(DeviceMap{}.uses(Placement::cpu()));
}

TEST(CleanDeviceMap, AccelerateCases) {
  EXPECT_EQ(clean_device_map({{"a", gpu(0)}, {"b", gpu(0)}, {"c", gpu(0)}}),
            (DeviceMap{{"", gpu(0)}}));
  EXPECT_EQ(
      clean_device_map(
          {{"a.x", gpu(0)}, {"a.y", gpu(0)}, {"b.x", gpu(1)}, {"b.y", gpu(1)}, {"c", gpu(1)}}),
      (DeviceMap{{"a", gpu(0)}, {"b", gpu(1)}, {"c", gpu(1)}}));
  EXPECT_EQ(clean_device_map({{"a.x", gpu(0)},
                              {"a.y", gpu(0)},
                              {"b.x.0", gpu(1)},
                              {"b.x.1", gpu(1)},
                              {"b.y.0", gpu(2)},
                              {"b.y.1", gpu(2)},
                              {"c", gpu(2)}}),
            (DeviceMap{{"a", gpu(0)}, {"b.x", gpu(1)}, {"b.y", gpu(2)}, {"c", gpu(2)}}));
}

TEST(CleanDeviceMap, MergedKeysAreAppendedAndSingleKeysKept) {
  const DeviceMap cleaned =
      clean_device_map({{"a.x", gpu(0)}, {"a.y", gpu(0)}, {"b", cpu()}, {"c.z", disk()}});
  ASSERT_EQ(cleaned.size(), 3U);
  EXPECT_EQ(cleaned.entries()[0].first, "b");
  EXPECT_EQ(cleaned.entries()[1].first, "c.z");  // a single key is not merged
  EXPECT_EQ(cleaned.entries()[2].first, "a");
  // "1" and "10" are different prefixes.
  EXPECT_EQ(clean_device_map({{"1.a", gpu(0)}, {"1.b", gpu(0)}, {"10.a", gpu(1)}}),
            (DeviceMap{{"1", gpu(0)}, {"10.a", gpu(1)}}));
}

TEST(DeviceMapValue, JsonRoundTripWithIntegerGpus) {
  const DeviceMap map{{"model.embed_tokens", gpu(0)},
                      {"model.layers.0", gpu(1)},
                      {"model.norm", cpu()},
                      {"lm_head", disk()}};
  const std::string json = map.to_json();
  EXPECT_EQ(json,
            R"({"model.embed_tokens":0,"model.layers.0":1,"model.norm":"cpu","lm_head":"disk"})");
  const DeviceMap back = DeviceMap::from_json(json);
  EXPECT_EQ(back, map);
  EXPECT_EQ(back.entries(), map.entries());
  EXPECT_EQ(DeviceMap::from_json(R"({"a": "cuda:1", "b": "0"})"),
            (DeviceMap{{"a", gpu(1)}, {"b", gpu(0)}}));
  EXPECT_THROW(DeviceMap::from_json(R"({"a": "tpu"})"), InvalidArgument);
  EXPECT_THROW(DeviceMap::from_json(R"({"a": -1})"), InvalidArgument);
  EXPECT_THROW(DeviceMap::from_json(R"([1, 2])"), InvalidArgument);
  EXPECT_THROW(DeviceMap::from_json("{"), InvalidArgument);
}

TEST(DeviceMapValue, LongestPrefixPlacementAndMainDevice) {
  const DeviceMap map{{"model", cpu()}, {"model.layers.1", gpu(2)}, {"model.layers.10", gpu(1)}};
  EXPECT_EQ(map.placement_of("model.layers.1.mlp.weight"), gpu(2));
  EXPECT_EQ(map.placement_of("model.layers.10.mlp.weight"), gpu(1));
  EXPECT_EQ(map.placement_of("model.norm.weight"), cpu());
  EXPECT_EQ(map.placement_of("lm_head.weight"), std::nullopt);
  EXPECT_EQ(main_device(map), gpu(2));
  EXPECT_EQ(main_device({{"a", disk()}, {"b", cpu()}}), cpu());
}

// Note [Where a block computes]: every (rest, main device) pair, and the resolver's
// streams_weights agrees with it.
TEST(DeviceMapValue, RoleOfEveryPlacementUnderEveryMainDevice) {
  const ExecutionDevice g0 = ExecutionDevice::gpu(0);
  const ExecutionDevice c = ExecutionDevice::cpu();
  EXPECT_EQ(role_of(gpu(1), g0), (BlockRole{.device = ExecutionDevice::gpu(1), .offloaded = false}));
  EXPECT_EQ(role_of(gpu(1), c), (BlockRole{.device = ExecutionDevice::gpu(1), .offloaded = false}));
  EXPECT_EQ(role_of(cpu(), c), (BlockRole{.device = c, .offloaded = false}));
  EXPECT_EQ(role_of(cpu(), g0), (BlockRole{.device = g0, .offloaded = true}));
  EXPECT_EQ(role_of(disk(), g0), (BlockRole{.device = g0, .offloaded = true}));
  EXPECT_EQ(role_of(disk(), c), (BlockRole{.device = c, .offloaded = true}));
  EXPECT_FALSE(streams_weights(DeviceMap{}));
  EXPECT_FALSE(streams_weights({{"a", cpu()}, {"b", cpu()}}));
  EXPECT_FALSE(streams_weights({{"a", gpu(0)}, {"b", gpu(1)}}));
  EXPECT_TRUE(streams_weights({{"a", gpu(0)}, {"b", cpu()}}));
  EXPECT_TRUE(streams_weights({{"a", cpu()}, {"b", disk()}}));
}

TEST(CheckDeviceMap, CoverageErrorListsMissingStateDictEntries) {
  ModelForTest model;
  check_device_map(model, {{"", gpu(0)}});
  check_device_map(model, {{"linear1", gpu(0)}, {"linear2", gpu(1)}, {"batchnorm", gpu(1)}});
  try {
    check_device_map(model, {{"linear1", gpu(0)}, {"linear2", gpu(1)}});
    FAIL();
  } catch (const InvalidDeviceMap& e) {
    EXPECT_STREQ(e.what(),
                 "The device_map provided does not give any device for the following parameters: "
                 "batchnorm.weight, batchnorm.bias, batchnorm.running_mean, "
                 "batchnorm.running_var, batchnorm.num_batches_tracked");
    EXPECT_EQ(e.path(), "batchnorm.weight");
  }
}

TEST(CheckDeviceMap, WarnsForKeysThatNameNoModule) {
  ModelForTest model;
  LogCapture logs;
  check_device_map(model, {{"linear1", cpu()},
                           {"batchnorm", cpu()},
                           {"linear2", cpu()},
                           {"invalid_module", gpu(0)},
                           {"another_invalid", gpu(1)}});
  EXPECT_TRUE(logs.contains(LogLevel::kWarning,
                            "The following device_map keys do not match any submodules in the "
                            "model: ['invalid_module', 'another_invalid']"));
  LogCapture quiet;
  check_device_map(model, {{"linear1.weight", cpu()},
                           {"linear1.bias", gpu(0)},
                           {"batchnorm", cpu()},
                           {"linear2", cpu()}});
  EXPECT_TRUE(quiet.entries().empty());
}

TEST(CheckDeviceMap, TiedParametersAreCheckedUnderEveryName) {
  testing::Holder model;
  model.add("a", std::make_shared<nn::Linear>(2, 2));
  model.add("b", std::make_shared<nn::Linear>(2, 2));
  testing::tie(model, "b.weight", "a.weight");
  EXPECT_THROW(check_device_map(model, {{"a", gpu(0)}, {"b.bias", gpu(0)}}), InvalidDeviceMap);
}

}  // namespace
}  // namespace ferry::plan

namespace ferry::plan {
namespace {

// A module registered under two names: the tree, the state dict and the check agree on both
// names, so a map that covers both is complete and one that names only the first is not.
TEST(CheckDeviceMap, ModuleUnderTwoNamesNeedsBothNames) {
  auto layer = std::make_shared<nn::Linear>(3, 3);
  testing::Holder model("Pair");
  model.add("0", layer);
  model.add("1", layer);
  const ModuleTree tree = ModuleTree::from_module(model);
  EXPECT_TRUE(tree.find("1.weight").has_value());
  EXPECT_EQ(tree.tied_groups().size(), 2U);
  EXPECT_NO_THROW(
      check_device_map(model, DeviceMap{{"0", Placement::cpu()}, {"1", Placement::disk()}}));
  try {
    check_device_map(model, DeviceMap{{"0", Placement::cpu()}});
    ADD_FAILURE() << "a map without '1' was accepted";
  } catch (const InvalidDeviceMap& e) {
    EXPECT_NE(std::string(e.what()).find("1.weight"), std::string::npos) << e.what();
  }
}

TEST(ModuleTreeFromModule, CycleIsInvalidArgument) {
  auto outer = std::make_shared<testing::Holder>("Outer");
  auto inner = outer->add("inner", std::make_shared<testing::Holder>("Inner"));
  inner->register_parameter("w", at::ones({1}));
  inner->add("back", std::shared_ptr<testing::Holder>(outer.get(), [](testing::Holder*) {}));
  EXPECT_THROW((void)ModuleTree::from_module(*outer), InvalidArgument);
}

}  // namespace
}  // namespace ferry::plan
