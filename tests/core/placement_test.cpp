#include "ferry/core/placement.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <type_traits>

#include "ferry/core/error.h"
#include "ferry/core/execution_device.h"

namespace ferry {
namespace {

TEST(Placement, ParsesDeviceMapValues) {
  EXPECT_EQ(Placement::parse("0"), Placement::gpu(0));
  EXPECT_EQ(Placement::parse("3"), Placement::gpu(3));
  EXPECT_EQ(Placement::parse("cuda:1"), Placement::gpu(1));
  EXPECT_EQ(Placement::parse("cpu"), Placement::cpu());
  EXPECT_EQ(Placement::parse("disk"), Placement::disk());
}

TEST(Placement, PrintsDeviceMapValues) {
  EXPECT_EQ(Placement::gpu(2).to_string(), "2");
  EXPECT_EQ(Placement::cpu().to_string(), "cpu");
  EXPECT_EQ(Placement::disk().to_string(), "disk");
  for (Placement p : {Placement::gpu(0), Placement::gpu(7), Placement::cpu(), Placement::disk()}) {
    EXPECT_EQ(Placement::parse(p.to_string()), p);
  }
}

TEST(Placement, RejectsOtherValues) {
  for (const char* bad : {"", "-1", "CPU", "gpu", "cuda:", "1.5", "mps", " 0", "0 "}) {
    try {
      Placement::parse(bad);
      FAIL() << bad;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("'") + bad + "'"), std::string::npos);
    }
  }
}

TEST(Placement, OrdersGpusThenCpuThenDisk) {
  std::vector<Placement> v{Placement::disk(), Placement::cpu(), Placement::gpu(1),
                           Placement::gpu(0)};
  std::sort(v.begin(), v.end());
  EXPECT_EQ(v, (std::vector<Placement>{Placement::gpu(0), Placement::gpu(1), Placement::cpu(),
                                       Placement::disk()}));
  EXPECT_TRUE(Placement::gpu(0).is_gpu());
  EXPECT_TRUE(Placement::cpu().is_cpu());
  EXPECT_TRUE(Placement::disk().is_disk());
}

// Note [Execution devices]: disk cannot be where a module computes, so a Placement does not
// convert to an ExecutionDevice (a compile error), while every ExecutionDevice is a Placement.
static_assert(!std::is_convertible_v<Placement, ExecutionDevice>);
static_assert(std::is_convertible_v<ExecutionDevice, Placement>);
static_assert(!std::is_constructible_v<ExecutionDevice, Placement>);

TEST(ExecutionDevice, IsAPlacementThatIsNotDisk) {
  EXPECT_EQ(Placement(ExecutionDevice::gpu(3)), Placement::gpu(3));
  EXPECT_EQ(Placement(ExecutionDevice::cpu()), Placement::cpu());
  EXPECT_EQ(ExecutionDevice::of(Placement::gpu(1)), ExecutionDevice::gpu(1));
  EXPECT_EQ(ExecutionDevice::of(Placement::cpu()), ExecutionDevice::cpu());
  EXPECT_EQ(ExecutionDevice::of(Placement::disk()), std::nullopt);
  EXPECT_EQ(ExecutionDevice::gpu(2).to_string(), "2");
  EXPECT_EQ(ExecutionDevice::gpu(2).index(), 2);
  EXPECT_TRUE(ExecutionDevice::cpu().is_cpu());
  EXPECT_FALSE(ExecutionDevice::cpu().is_gpu());
  // Comparisons with placements widen the execution device.
  EXPECT_TRUE(Placement::gpu(0) == ExecutionDevice::gpu(0));
  EXPECT_FALSE(Placement::disk() == ExecutionDevice::cpu());
}

TEST(ExecutionDevice, ParsesAndRejectsDisk) {
  EXPECT_EQ(ExecutionDevice::parse("cuda:1"), ExecutionDevice::gpu(1));
  EXPECT_EQ(ExecutionDevice::parse("cpu"), ExecutionDevice::cpu());
  try {
    ExecutionDevice::parse("disk");
    FAIL() << "disk parsed as an execution device";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("cannot be 'disk'"), std::string::npos) << e.what();
    EXPECT_EQ(e.fields().actual, "disk");
  }
  EXPECT_THROW(ExecutionDevice::parse("mps"), InvalidArgument);
  try {
    ExecutionDevice::from(Placement::disk(), "the main device");
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("the main device cannot be 'disk'"), std::string::npos);
  }
}

}  // namespace
}  // namespace ferry
