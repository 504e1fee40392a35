#include "ferry/dispatch/dispatch_model.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <random>

#include "dispatch_test_models.h"
#include "ferry/core/devices.h"
#include "ferry/core/error.h"
#include "ferry/core/log.h"
#include "ferry/nn/containers.h"
#include "ferry/nn/linear.h"
#include "scratch_dir.h"

namespace ferry::dispatch {
namespace {

using testing::ModelForTest;
using testing::TinyStack;

using TempDir = ferry::testing::ScratchDir;

TEST(DispatchModel, SingleDeviceMapJustMovesTheModel) {
  SimGpuScope gpus({1_MiB});
  ModelForTest m;
  const at::Tensor x = at::randn({2, 3});
  const at::Tensor expected = m(x);
  dispatch_model(m, plan::DeviceMap{{"", Placement::gpu(0)}});
  EXPECT_EQ(placement_of(m.linear1->weight()), Placement::gpu(0));
  EXPECT_EQ(m.linear1->hook(), nullptr);
  EXPECT_TRUE(at::equal(m(x), expected));
  ASSERT_TRUE(hf_device_map(m).has_value());
  EXPECT_EQ(*hf_device_map(m), (plan::DeviceMap{{"", Placement::gpu(0)}}));
}

TEST(DispatchModel, SplitOverGpusCpuAndDiskEqualsUndispatched) {
  SimGpuScope gpus({1_MiB, 1_MiB});
  TempDir dir;
  ModelForTest m;
  const at::Tensor x = at::randn({2, 3});
  const at::Tensor expected = m(x);
  LogCapture log;
  dispatch_model(m,
                 plan::DeviceMap{{"linear1", Placement::gpu(1)},
                                 {"batchnorm", Placement::cpu()},
                                 {"linear2", Placement::disk()}},
                 DispatchOptions{.offload_dir = dir.path()});
  EXPECT_TRUE(log.contains(LogLevel::kInfo,
                           "Some parameters are on the meta device because they were offloaded "
                           "to the cpu and disk."));
  EXPECT_EQ(placement_of(m.linear1->weight()), Placement::gpu(1));
  EXPECT_TRUE(m.batchnorm->find_tensor("weight").tensor().is_meta());
  EXPECT_TRUE(m.linear2->weight().is_meta());
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "index.json"));
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "linear2.weight.dat"));
  const at::Tensor y = m(x);
  EXPECT_TRUE(at::equal(y, expected));
  EXPECT_EQ(placement_of(y), Placement::cpu());  // io_same_device
}

TEST(DispatchModel, TiedParametersOnDifferentDevicesWarn) {
  TempDir dir;
  TinyStack model(11, 4, 1);
  const at::Tensor ids = at::randint(11, {1, 3});
  const at::Tensor expected = model(ids);
  LogCapture log;
  dispatch_model(model,
                 plan::DeviceMap{{"embed", Placement::cpu()},
                                 {"layers", Placement::cpu()},
                                 {"norm", Placement::cpu()},
                                 {"scale", Placement::cpu()},
                                 {"head", Placement::disk()}},
                 DispatchOptions{.offload_dir = dir.path()});
  EXPECT_TRUE(log.contains(LogLevel::kWarning,
                           "Tied parameters are on different devices: {'embed.weight': cpu, "
                           "'head.weight': disk}. Please modify your custom device map or set "
                           "`device_map='auto'`."));
  EXPECT_TRUE(at::equal(model(ids), expected));  // still correct, only slower
}

TEST(DispatchModel, DiskWithoutOffloadDirIsAnError) {
  ModelForTest m;
  try {
    dispatch_model(m, plan::DeviceMap{{"linear1", Placement::cpu()},
                                      {"batchnorm", Placement::disk()},
                                      {"linear2", Placement::disk()}});
    FAIL();
  } catch (const InvalidDeviceMap& e) {
    EXPECT_STREQ(e.what(),
                 "We need an `offload_dir` to dispatch this model according to this `device_map`, "
                 "the following submodules need to be offloaded: batchnorm, linear2.");
  }
}

TEST(DispatchModel, IncompleteMapIsAnError) {
  ModelForTest m;
  try {
    dispatch_model(m, plan::DeviceMap{{"linear1", Placement::cpu()}});
    FAIL();
  } catch (const InvalidDeviceMap& e) {
    EXPECT_NE(std::string(e.what()).find("The device_map provided does not give any device for "
                                         "the following parameters: batchnorm.weight"),
              std::string::npos);
  }
}

TEST(DispatchModel, MovingADispatchedModel) {
  SimGpuScope gpus({1_MiB});
  {
    ModelForTest m;
    dispatch_model(m, plan::DeviceMap{{"linear1", Placement::gpu(0)},
                                      {"batchnorm", Placement::cpu()},
                                      {"linear2", Placement::gpu(0)}});
    LogCapture log;
    try {
      move_model(m, ExecutionDevice::cpu());
      FAIL();
    } catch (const InvalidDeviceMap& e) {
      EXPECT_STREQ(e.what(),
                   "You can't move a model that has some modules offloaded to cpu or disk.");
    }
    EXPECT_TRUE(log.contains(LogLevel::kWarning, "You shouldn't move a model that is dispatched"));
  }
  {
    ModelForTest m;
    dispatch_model(m, plan::DeviceMap{{"", Placement::gpu(0)}},
                   DispatchOptions{.force_hooks = true});
    LogCapture log;
    move_model(m, ExecutionDevice::cpu());
    EXPECT_TRUE(log.contains(LogLevel::kWarning, "You shouldn't move a model that is dispatched"));
    EXPECT_EQ(placement_of(m.linear1->weight()), Placement::cpu());
  }
}

TEST(CpuOffload, EqualsUndispatchedAndKeepsGpuPeakToOneModule) {
  SimGpuScope gpus({1_MiB});
  TinyStack model(17, 8, 3);
  const at::Tensor ids = at::randint(17, {2, 6});
  const at::Tensor expected = model(ids);
  // Accelerate's way (no prefetcher): each module's weights come and go with its call.
  cpu_offload(model,
              OffloadOptions{.execution_device = ExecutionDevice::gpu(0), .prefetch = std::nullopt});
  for (const auto& p : model.named_parameters()) EXPECT_TRUE(p.tensor().is_meta()) << p.name;
  reset_sim_gpu_peak(0);
  EXPECT_TRUE(at::equal(model(ids), expected));
  // Only the root's buffer stays resident (buffers are not offloaded without offload_buffers).
  EXPECT_EQ(sim_gpu_stats(0).resident, Bytes(4));
  // Largest module: the tied embedding/head (17 x 8 floats) plus the moved activations.
  EXPECT_LE(sim_gpu_stats(0).peak.value(), 17U * 8U * 4U + 4096U);
}

TEST(DiskOffload, EqualsUndispatchedReadingTheOffloadFolder) {
  TempDir dir;
  TinyStack model(13, 8, 2);
  const at::Tensor ids = at::randint(13, {1, 4});
  const at::Tensor expected = model(ids);
  disk_offload(model, dir.path());
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "layers.0.fc1.weight.dat"));
  EXPECT_TRUE(at::equal(model(ids), expected));
}

// A module registered under two names (Sequential(layer,
// layer)) has both names in the state dict and the module tree, so a map may put each name
// elsewhere; the layer is one set of slots (a tied group), resident where one name rests and
// loaded from the weights map for the other. Every such map gives the undispatched output.
TEST(DispatchModel, ModuleUnderTwoNamesWithOneNameOnDiskEqualsUndispatched) {
  const std::vector<plan::DeviceMap> maps{
      {{"0", Placement::cpu()}, {"1", Placement::disk()}},
      {{"0", Placement::disk()}, {"1", Placement::cpu()}},
      {{"0", Placement::disk()}, {"1", Placement::disk()}},
      {{"0", Placement::gpu(0)}, {"1", Placement::disk()}},
      {{"0", Placement::disk()}, {"1", Placement::gpu(0)}},
      {{"0", Placement::cpu()}, {"1", Placement::gpu(0)}},
  };
  for (const plan::DeviceMap& map : maps) {
    SimGpuScope gpus({1_MiB});
    TempDir dir;
    auto layer = std::make_shared<nn::Linear>(4, 4);
    nn::Sequential model;
    model.push_back(layer);
    model.push_back(layer);
    const at::Tensor x = at::randn({2, 4});
    const at::Tensor expected = model(x);
    LogCapture quiet;  // the tied group spans two placements: a warning, as in Accelerate
    ASSERT_NO_THROW(dispatch_model(model, map, DispatchOptions{.offload_dir = dir.path()}))
        << map.to_json();
    const at::Tensor y = model(x);
    EXPECT_TRUE(at::equal(y, expected)) << map.to_json();
    EXPECT_TRUE(at::equal(model(x), expected)) << "second call, " << map.to_json();
    if (map.uses(Placement::disk()) && !map.uses(Placement::gpu(0)) &&
        !map.uses(Placement::cpu())) {
      EXPECT_TRUE(std::filesystem::exists(dir.path() / "1.weight.dat"));
    }
  }
}

// Random maps over {gpu 0, gpu 1, cpu, disk} at block or leaf granularity give the undispatched
// output bit for bit, and no simulated GPU exceeds its capacity.
TEST(DispatchModel, RandomDeviceMapsAreEquivalent) {
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 200; ++trial) {
    SimGpuScope gpus({256_KiB, 256_KiB});
    TempDir dir;
    at::manual_seed(trial);
    TinyStack model(19, 8, 3);
    const at::Tensor ids = at::randint(19, {2, 5});
    const at::Tensor expected = model(ids);
    const plan::DeviceMap map = testing::random_stack_map(rng);
    dispatch_model(model, map, DispatchOptions{.offload_dir = dir.path()});
    const at::Tensor y = model(ids);
    ASSERT_TRUE(at::equal(y, expected)) << "trial " << trial << " map " << map.to_json();
    for (int g = 0; g < 2; ++g) EXPECT_LE(sim_gpu_stats(g).peak, 256_KiB);
  }
}

}  // namespace
}  // namespace ferry::dispatch

namespace ferry::dispatch {
namespace {

// The same paths on a real CUDA device when one is present (skipped cleanly otherwise).
TEST(DispatchModelCuda, SplitOverCudaCpuAndDiskEqualsUndispatched) {
  SimGpuScope no_simulation({});
  if (gpu_count() == 0) GTEST_SKIP() << "no CUDA GPU";
  TempDir dir;
  TinyStack model(19, 8, 3);
  const at::Tensor ids = at::randint(19, {2, 5});
  const at::Tensor expected = model(ids);
  dispatch_model(model,
                 plan::DeviceMap{{"embed", Placement::gpu(0)},
                                 {"head", Placement::gpu(0)},
                                 {"layers.0", Placement::cpu()},
                                 {"layers.1", Placement::disk()},
                                 {"layers.2", Placement::gpu(0)},
                                 {"norm", Placement::gpu(0)},
                                 {"scale", Placement::gpu(0)}},
                 DispatchOptions{.offload_dir = dir.path()});
  EXPECT_TRUE(at::allclose(model(ids).cpu(), expected, 1e-5, 1e-5));
}

}  // namespace
}  // namespace ferry::dispatch
