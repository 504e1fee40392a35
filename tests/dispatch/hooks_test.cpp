#include "ferry/dispatch/hooks.h"

#include <gtest/gtest.h>

#include "dispatch_test_models.h"
#include "ferry/core/devices.h"
#include "ferry/dispatch/align_devices.h"
#include "ferry/dispatch/cpu_offload_hook.h"
#include "ferry/dispatch/send.h"
#include "ferry/io/tensor_source.h"

namespace ferry::dispatch {
namespace {

using testing::ModelForTest;

class Recorder : public ModelHook {
 public:
  Recorder(std::string name, std::vector<std::string>* log) : name_(std::move(name)), log_(log) {}
  void init(nn::Module&) override { log_->push_back(name_ + ".init"); }
  void pre_forward(nn::Module&, nn::TensorView&) override { log_->push_back(name_ + ".pre"); }
  void post_forward(nn::Module&, nn::TensorView&) override { log_->push_back(name_ + ".post"); }
  void detach(nn::Module&) override { log_->push_back(name_ + ".detach"); }

 private:
  std::string name_;
  std::vector<std::string>* log_;
};

TEST(HookLifecycle, AddRunsInitAndCallsRunPreThenPost) {
  std::vector<std::string> log;
  nn::Linear lin(2, 2);
  add_hook_to_module(lin, std::make_shared<Recorder>("a", &log));
  lin(at::ones({1, 2}));
  EXPECT_EQ(log, (std::vector<std::string>{"a.init", "a.pre", "a.post"}));
}

TEST(HookLifecycle, ReplaceDoesNotDetachTheOldHook) {
  std::vector<std::string> log;
  nn::Linear lin(2, 2);
  add_hook_to_module(lin, std::make_shared<Recorder>("a", &log));
  add_hook_to_module(lin, std::make_shared<Recorder>("b", &log));
  lin(at::ones({1, 2}));
  EXPECT_EQ(log, (std::vector<std::string>{"a.init", "b.init", "b.pre", "b.post"}));
}

TEST(HookLifecycle, AppendDetachesThenComposesInInsertionOrder) {
  std::vector<std::string> log;
  nn::Linear lin(2, 2);
  add_hook_to_module(lin, std::make_shared<Recorder>("a", &log));
  add_hook_to_module(lin, std::make_shared<Recorder>("b", &log), /*append=*/true);
  lin(at::ones({1, 2}));
  EXPECT_EQ(log, (std::vector<std::string>{"a.init", "a.detach", "a.init", "b.init", "a.pre",
                                           "b.pre", "a.post", "b.post"}));
  EXPECT_NE(dynamic_cast<SequentialHook*>(lin.hook().get()), nullptr);
  EXPECT_EQ(find_hooks<Recorder>(lin).size(), 2U);
}

TEST(HookLifecycle, RemoveDetachesAndRestoresPlainCalls) {
  std::vector<std::string> log;
  ModelForTest m;
  add_hook_to_module(m, std::make_shared<Recorder>("root", &log));
  add_hook_to_module(*m.linear1, std::make_shared<Recorder>("l1", &log));
  remove_hook_from_module(m);
  EXPECT_EQ(m.hook(), nullptr);
  EXPECT_NE(m.linear1->hook(), nullptr);
  remove_hook_from_submodules(m);
  EXPECT_EQ(m.linear1->hook(), nullptr);
  log.clear();
  m(at::ones({2, 3}));
  EXPECT_TRUE(log.empty());
}

TEST(SendToDevice, SkipKeysAndFindDevice) {
  SimGpuScope gpus({1_MiB});
  struct Inputs {
    at::Tensor x;
    at::Tensor cache;
    void visit_tensors(nn::TensorView& v) {
      v.visit(x, "x");
      v.visit(cache, "cache");
    }
  } in{at::ones({2}), at::ones({3})};
  nn::TensorView view;
  view.visit(in);
  EXPECT_EQ(find_device(view), ExecutionDevice::cpu());
  send_to_device(view, ExecutionDevice::gpu(0), {"cache"});
  EXPECT_EQ(placement_of(in.x), ExecutionDevice::gpu(0));
  EXPECT_EQ(placement_of(in.cache), ExecutionDevice::cpu());
  nn::TensorView view2;
  view2.visit(in);
  EXPECT_EQ(find_device(view2), ExecutionDevice::gpu(0));
}

TEST(AlignDevicesHook, MovesWeightsAndInputsToExecutionDevice) {
  SimGpuScope gpus({1_MiB});
  nn::Linear lin(3, 4);
  const at::Tensor x = at::randn({2, 3});
  const at::Tensor expected = lin(x);
  add_hook_to_module(lin, std::make_shared<AlignDevicesHook>(AlignDevicesOptions{
                              .execution_device = ExecutionDevice::gpu(0), .io_same_device = true}));
  EXPECT_EQ(placement_of(lin.weight()), ExecutionDevice::gpu(0));
  EXPECT_TRUE(at::equal(lin(x), expected));
  EXPECT_EQ(sim_gpu_stats(0).resident, Bytes(4 * 3 * 4 + 4 * 4));  // weights stay resident
}

TEST(AlignDevicesHook, OffloadMaterializesPerCallAndReturnsToMeta) {
  SimGpuScope gpus({1_MiB});
  ModelForTest m;
  const at::Tensor x = at::randn({2, 3});
  const at::Tensor expected = m(x);
  add_hook_to_module(*m.linear1, std::make_shared<AlignDevicesHook>(AlignDevicesOptions{
                                     .execution_device = ExecutionDevice::gpu(0), .offload = true}));
  EXPECT_TRUE(m.linear1->weight().is_meta());
  reset_sim_gpu_peak(0);
  const at::Tensor y = m(x);
  EXPECT_TRUE(at::equal(y, expected));
  EXPECT_TRUE(m.linear1->weight().is_meta());
  EXPECT_EQ(sim_gpu_stats(0).resident, Bytes(0));
  EXPECT_GE(sim_gpu_stats(0).peak.value(), static_cast<std::uint64_t>(4 * 3 * 4 + 4 * 4));
  // Detaching puts the weights back where they were.
  remove_hook_from_module(*m.linear1);
  EXPECT_TRUE(m.linear1->weight().is_cpu());
  EXPECT_TRUE(at::equal(m(x), expected));
}

// Note [Grouped calls]: an offloading hook is not groupable, so grouped projections keep the
// one-weight-at-a-time residency the budget counted; without offload they are grouped.
TEST(AlignDevicesHook, OnlyHooksWithoutOffloadGroupCalls) {
  SimGpuScope gpus({1_MiB});
  const auto hook = [](bool offload) {
    return std::make_shared<AlignDevicesHook>(
        AlignDevicesOptions{.execution_device = ExecutionDevice::gpu(0), .offload = offload});
  };
  EXPECT_TRUE(hook(false)->groupable());
  EXPECT_FALSE(hook(true)->groupable());
  EXPECT_TRUE(SequentialHook({hook(false), hook(false)}).groupable());
  EXPECT_FALSE(SequentialHook({hook(false), hook(true)}).groupable());

  std::vector<std::shared_ptr<nn::Linear>> owned{std::make_shared<nn::Linear>(64, 32),
                                                 std::make_shared<nn::Linear>(64, 32)};
  std::vector<nn::Linear*> layers{owned[0].get(), owned[1].get()};
  const at::Tensor x = at::randn({1, 64});
  const std::vector<at::Tensor> expected{(*layers[0])(x), (*layers[1])(x)};
  for (nn::Linear* l : layers) add_hook_to_module(*l, hook(true));
  reset_sim_gpu_peak(0);
  std::vector<at::Tensor> got = nn::Linear::call_group(layers, x);
  ASSERT_EQ(got.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) EXPECT_TRUE(at::equal(got[i].cpu(), expected[i])) << i;
  EXPECT_EQ(sim_gpu_stats(0).resident, Bytes(0));
  const std::uint64_t one_layer = 32 * 64 * 4 + 32 * 4;
  EXPECT_GE(sim_gpu_stats(0).peak.value(), one_layer);
  EXPECT_LT(sim_gpu_stats(0).peak.value(), 2 * one_layer);  // never both weights at once
}

TEST(AlignDevicesHook, OffloadBuffersControlsWhereBuffersLive) {
  SimGpuScope gpus({1_MiB});
  {
    ModelForTest m;
    add_hook_to_module(*m.batchnorm, std::make_shared<AlignDevicesHook>(AlignDevicesOptions{
                                         .execution_device = ExecutionDevice::gpu(0), .offload = true}));
    EXPECT_EQ(placement_of(m.batchnorm->find_tensor("running_mean").tensor()), ExecutionDevice::gpu(0));
    EXPECT_TRUE(m.batchnorm->find_tensor("weight").tensor().is_meta());
  }
  {
    ModelForTest m;
    add_hook_to_module(
        *m.batchnorm,
        std::make_shared<AlignDevicesHook>(AlignDevicesOptions{
            .execution_device = ExecutionDevice::gpu(0), .offload = true, .offload_buffers = true}));
    EXPECT_TRUE(m.batchnorm->find_tensor("running_mean").tensor().is_meta());
    const at::Tensor x = at::randn({2, 4});
    EXPECT_EQ((*m.batchnorm)(x).size(1), 4);
  }
}

TEST(AlignDevicesHook, MissingWeightIsATypedErrorNamingIt) {
  SimGpuScope gpus({1_MiB});
  nn::Linear lin(2, 2);
  try {
    // Found when the hook is attached (dispatch time), not at the first forward.
    add_hook_to_module(lin,
                       std::make_shared<AlignDevicesHook>(AlignDevicesOptions{
                           .execution_device = ExecutionDevice::gpu(0),
                           .offload = true,
                           .weights_map = io::make_memory_source({{"weight", at::ones({2, 2})}})}));
    FAIL();
  } catch (const MissingTensor& e) {
    EXPECT_NE(std::string(e.what()).find("'bias'"), std::string::npos);
  }
}

TEST(AttachAlignDeviceHook, HooksEveryModuleWithTensorsAndPreloadStops) {
  SimGpuScope gpus({1_MiB});
  testing::TinyStack model(11, 4, 2);
  const at::Tensor ids = at::randint(11, {1, 5});
  const at::Tensor expected = model(ids);
  attach_align_device_hook(model, ExecutionDevice::gpu(0), /*offload=*/true,
                           AttachOptions{.preload_module_classes = {"Block"}});
  EXPECT_NE(model.embed->hook(), nullptr);
  EXPECT_NE(model.blocks[0]->hook(), nullptr);
  EXPECT_EQ(model.blocks[0]->fc1->hook(), nullptr);  // the preload block loads its subtree
  EXPECT_EQ(find_hooks<AlignDevicesHook>(*model.blocks[0]).front()->options().place_submodules,
            true);
  EXPECT_TRUE(at::equal(model(ids), expected));
}

}  // namespace
}  // namespace ferry::dispatch

namespace ferry::dispatch {
namespace {

TEST(CpuOffloadWithHook, PipelineKeepsOneModelOnTheDevice) {
  SimGpuScope gpus({1_MiB});
  nn::Linear a(8, 8);
  nn::Linear b(8, 8);
  const at::Tensor x = at::randn({2, 8});
  const at::Tensor expected = b(a(x));
  auto hook_a = cpu_offload_with_hook(a, ExecutionDevice::gpu(0));
  auto hook_b = cpu_offload_with_hook(b, ExecutionDevice::gpu(0), hook_a);
  EXPECT_EQ(placement_of(a.weight()), ExecutionDevice::cpu());
  const at::Tensor mid = a(x);
  EXPECT_EQ(placement_of(a.weight()), ExecutionDevice::gpu(0));  // stays after its call
  const at::Tensor y = b(mid);
  EXPECT_EQ(placement_of(a.weight()), ExecutionDevice::cpu());  // b's call offloaded a
  EXPECT_EQ(placement_of(b.weight()), ExecutionDevice::gpu(0));
  EXPECT_TRUE(at::equal(y, expected));
  // One model at a time on the device: its weights plus one moved input.
  EXPECT_EQ(sim_gpu_stats(0).peak.value(), (8U * 8 * 4 + 8 * 4) + 2U * 8 * 4);
  hook_b->offload();
  EXPECT_EQ(placement_of(b.weight()), ExecutionDevice::cpu());
  hook_b->remove();
  EXPECT_EQ(b.hook(), nullptr);
}

}  // namespace
}  // namespace ferry::dispatch
