#include "ferry/nn/init.h"

#include <c10/core/CPUAllocator.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>

#include "ferry/core/error.h"
#include "ferry/nn/containers.h"
#include "ferry/nn/linear.h"
#include "test_models.h"

namespace ferry::nn {
namespace {

using testing::ModelForTest;

// Counts every CPU allocation LibTorch makes while installed.
class CountingAllocator : public c10::Allocator {
 public:
  explicit CountingAllocator(c10::Allocator* base) : base_(base) {}
  c10::DataPtr allocate(std::size_t n) const override {
    bytes_ += n;
    return base_->allocate(n);
  }
  c10::DeleterFnPtr raw_deleter() const override { return base_->raw_deleter(); }
  std::size_t bytes() const { return bytes_.load(); }

 private:
  c10::Allocator* base_;
  mutable std::atomic<std::size_t> bytes_{0};
};

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(InitEmptyWeights, ParametersOnMetaBuffersStayOnCpu) {
  ScopedEnv env("FERRY_INIT_INCLUDE_BUFFERS", nullptr);
  std::unique_ptr<ModelForTest> m;
  {
    InitEmptyWeights guard;
    m = std::make_unique<ModelForTest>();
  }
  for (const auto& p : m->named_parameters()) EXPECT_TRUE(p.tensor().is_meta()) << p.name;
  for (const auto& b : m->named_buffers()) EXPECT_TRUE(b.tensor().is_cpu()) << b.name;
  // The dtype of meta parameters is kept.
  EXPECT_EQ(m->linear1->weight().scalar_type(), at::kFloat);
  // After the guard, construction is normal again.
  Linear after(2, 2);
  EXPECT_TRUE(after.weight().is_cpu());
}

TEST(InitEmptyWeights, IncludeBuffersPutsBuffersOnMetaToo) {
  InitEmptyWeights guard(/*include_buffers=*/true);
  ModelForTest m;
  for (const auto& t : m.named_module_tensors()) EXPECT_TRUE(t.tensor().is_meta()) << t.name;
}

TEST(InitEmptyWeights, UserRegisteredTensorsAreMovedToo) {
  InitEmptyWeights guard;
  Linear lin(2, 2);
  lin.register_parameter("extra", at::ones({3}));
  lin.register_buffer("buf", at::ones({3}));
  EXPECT_TRUE(lin.find_tensor("extra").tensor().is_meta());
  EXPECT_TRUE(lin.find_tensor("buf").tensor().is_cpu());
}

TEST(InitEmptyWeights, EnvironmentDefaultForIncludeBuffers) {
  {
    ScopedEnv env("FERRY_INIT_INCLUDE_BUFFERS", "yes");
    InitEmptyWeights guard;
    EXPECT_TRUE(current_init_context().include_buffers);
    BatchNorm1d bn(2);
    EXPECT_TRUE(bn.find_tensor("running_mean").tensor().is_meta());
  }
  {
    ScopedEnv env("FERRY_INIT_INCLUDE_BUFFERS", "OFF");
    InitEmptyWeights guard;
    EXPECT_FALSE(current_init_context().include_buffers);
  }
  {
    ScopedEnv env("FERRY_INIT_INCLUDE_BUFFERS", "1");
    InitEmptyWeights guard(/*include_buffers=*/false);  // an explicit value wins
    EXPECT_FALSE(current_init_context().include_buffers);
  }
}

TEST(InitEmptyWeights, InvalidEnvironmentValueIsAnErrorAndChangesNothing) {
  ScopedEnv env("FERRY_INIT_INCLUDE_BUFFERS", "sometimes");
  try {
    InitEmptyWeights guard;
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("invalid truth value sometimes"), std::string::npos);
  }
  EXPECT_FALSE(current_init_context().device.has_value());
}

TEST(InitOnDevice, RestoredOnExceptionAndNested) {
  EXPECT_FALSE(current_init_context().device.has_value());
  try {
    InitEmptyWeights outer(/*include_buffers=*/false);
    {
      InitOnDevice inner(c10::Device(c10::kCPU), /*include_buffers=*/true);
      EXPECT_EQ(current_init_context().device, c10::Device(c10::kCPU));
      EXPECT_TRUE(current_init_context().include_buffers);
    }
    EXPECT_EQ(current_init_context().device, c10::Device(c10::kMeta));
    EXPECT_FALSE(current_init_context().include_buffers);
    throw std::runtime_error("fails inside the guard");
  } catch (const std::runtime_error&) {
  }
  EXPECT_FALSE(current_init_context().device.has_value());
  Linear lin(2, 2);
  EXPECT_TRUE(lin.weight().is_cpu());
}

TEST(InitOnDevice, ContextIsThreadLocal) {
  InitEmptyWeights guard;
  bool other_thread_has_device = true;
  std::thread t([&] { other_thread_has_device = current_init_context().device.has_value(); });
  t.join();
  EXPECT_FALSE(other_thread_has_device);
}

TEST(InitEmptyWeights, HundredBillionParametersAllocateNoWeightStorage) {
  c10::Allocator* base = c10::GetCPUAllocator();
  CountingAllocator counting(base);
  c10::SetCPUAllocator(&counting, /*priority=*/100);
  auto model = std::make_shared<Sequential>();
  {
    InitEmptyWeights guard;
    for (int i = 0; i < 1000; ++i) model->push_back(std::make_shared<Linear>(10000, 10000));
  }
  const std::size_t while_building = counting.bytes();
  const at::Tensor probe = at::empty({1024});  // proves the counter sees CPU allocations
  const std::size_t after_probe = counting.bytes();
  c10::SetCPUAllocator(base, /*priority=*/101);
  EXPECT_EQ(while_building, 0U);
  EXPECT_GE(after_probe, 4096U);
  std::int64_t numel = 0;
  for (const auto& p : model->named_parameters()) {
    EXPECT_TRUE(p.tensor().is_meta());
    numel += p.tensor().numel();
  }
  EXPECT_EQ(numel, 1000LL * (10000LL * 10000LL + 10000LL));
}

TEST(PlaceOn, MetaKeepsShapeAndDtype) {
  const at::Tensor t = at::ones({2, 3}, at::kHalf);
  const at::Tensor m = place_on(t, c10::Device(c10::kMeta));
  EXPECT_TRUE(m.is_meta());
  EXPECT_EQ(m.sizes(), t.sizes());
  EXPECT_EQ(m.scalar_type(), at::kHalf);
  EXPECT_TRUE(place_on(t, c10::Device(c10::kCPU)).is_same(t));
}

}  // namespace
}  // namespace ferry::nn
