#include "ferry/core/devices.h"

#include <gtest/gtest.h>

#include "ferry/core/error.h"
#include "ferry/core/memory.h"

namespace ferry {
namespace {

TEST(SimGpus, ParseConfigurations) {
  EXPECT_EQ(parse_sim_gpus("2"), (std::vector<Bytes>{16_GiB, 16_GiB}));
  EXPECT_EQ(parse_sim_gpus("3:1MiB"), (std::vector<Bytes>{1_MiB, 1_MiB, 1_MiB}));
  EXPECT_EQ(parse_sim_gpus("8GiB,4GiB"), (std::vector<Bytes>{8_GiB, 4_GiB}));
  EXPECT_EQ(parse_sim_gpus("0"), std::vector<Bytes>{});
  for (const char* bad : {"", "-1", "two", "2:", "2:lots", "8GiB,", "1000"}) {
    try {
      parse_sim_gpus(bad);
      FAIL() << bad;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("FERRY_SIM_GPUS '") + bad + "'"),
                std::string::npos);
    }
  }
}

TEST(SimGpus, MovesAreRealCountedCopies) {
  SimGpuScope scope({1_MiB, 1_MiB});
  EXPECT_TRUE(gpus_simulated());
  EXPECT_EQ(gpu_count(), 2);
  const at::Tensor cpu = at::arange(1024, at::kFloat);  // 4 KiB
  at::Tensor on0 = move_to(cpu, ExecutionDevice::gpu(0));
  EXPECT_EQ(placement_of(on0), ExecutionDevice::gpu(0));
  EXPECT_EQ(placement_of(cpu), ExecutionDevice::cpu());
  EXPECT_NE(on0.data_ptr(), cpu.data_ptr());
  EXPECT_TRUE(at::equal(on0, cpu));
  EXPECT_EQ(sim_gpu_stats(0).resident, Bytes(4096));
  EXPECT_EQ(sim_gpu_stats(0).bytes_in, 4096U);
  EXPECT_TRUE(move_to(on0, ExecutionDevice::gpu(0)).is_same(on0));  // already there: no copy

  at::Tensor on1 = move_to(on0, ExecutionDevice::gpu(1));  // GPU to GPU
  EXPECT_EQ(placement_of(on1), ExecutionDevice::gpu(1));
  EXPECT_EQ(sim_gpu_stats(0).bytes_out, 4096U);
  at::Tensor back = move_to(on1, ExecutionDevice::cpu());
  EXPECT_EQ(placement_of(back), ExecutionDevice::cpu());
  EXPECT_TRUE(at::equal(back, cpu));
  // Views of a simulated tensor are on that GPU; results of ops are host tensors.
  EXPECT_EQ(placement_of(on0.narrow(0, 10, 5)), ExecutionDevice::gpu(0));
  on0 = at::Tensor();
  EXPECT_EQ(sim_gpu_stats(0).resident, Bytes(0));
  EXPECT_EQ(sim_gpu_stats(0).peak, Bytes(4096));
  reset_sim_gpu_peak(0);
  EXPECT_EQ(sim_gpu_stats(0).peak, Bytes(0));
}

TEST(SimGpus, CapacityIsEnforced) {
  SimGpuScope scope({8_KiB});
  const at::Tensor t = at::zeros({1024}, at::kFloat);  // 4 KiB
  at::Tensor a = move_to(t, ExecutionDevice::gpu(0));
  at::Tensor b = move_to(t, ExecutionDevice::gpu(0));
  try {
    move_to(t, ExecutionDevice::gpu(0));
    FAIL();
  } catch (const OutOfBudget& e) {
    EXPECT_NE(std::string(e.what()).find("simulated GPU 0 out of memory"), std::string::npos);
  }
  EXPECT_EQ(sim_gpu_stats(0).resident, 8_KiB);
  a = at::Tensor();
  EXPECT_NO_THROW(move_to(t, ExecutionDevice::gpu(0)));
}

TEST(SimGpus, ProbingAndErrors) {
  SimGpuScope scope({4_KiB, 8_KiB});
  at::Tensor a = move_to(at::zeros({256}), ExecutionDevice::gpu(1));
  const auto gpus = probe_gpus();
  ASSERT_EQ(gpus.size(), 2U);
  EXPECT_EQ(gpus[1].total, 8_KiB);
  EXPECT_EQ(gpus[1].free, 7_KiB);
  EXPECT_THROW(move_to(a, ExecutionDevice::gpu(2)), InvalidArgument);
  EXPECT_THROW(move_to(at::empty({2}, at::TensorOptions().device(at::kMeta)), ExecutionDevice::cpu()),
               InvalidArgument);
  EXPECT_EQ(placement_of(at::empty({2}, at::TensorOptions().device(at::kMeta))), std::nullopt);
  EXPECT_THROW(sim_gpu_stats(5), InvalidArgument);
}

TEST(SimGpus, ScopesNestAndRestore) {
  {
    SimGpuScope outer({1_MiB});
    {
      SimGpuScope inner({1_MiB, 1_MiB, 1_MiB});
      EXPECT_EQ(gpu_count(), 3);
    }
    EXPECT_EQ(gpu_count(), 1);
  }
}

TEST(Devices, WithoutSimulationGpuPlacementsNeedCuda) {
  SimGpuScope none({});
  EXPECT_FALSE(gpus_simulated());
  if (gpu_count() == 0) {
    EXPECT_THROW(move_to(at::zeros({2}), ExecutionDevice::gpu(0)), InvalidArgument);
    EXPECT_TRUE(probe_gpus().empty());
  }
  EXPECT_TRUE(move_to(at::zeros({2}), ExecutionDevice::cpu()).is_cpu());
}

}  // namespace
}  // namespace ferry
