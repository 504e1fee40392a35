#include "ferry/core/placement.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "ferry/core/error.h"

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

}  // namespace
}  // namespace ferry
