#pragma once
// Shared by the kernels tests: the instruction-set parameter and a magnitude-relative comparison.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <string>

#include "ferry/kernels/isa.h"

namespace ferry::kernels::testing {

// Sets LibTorch's thread count for a scope, then restores it.
class ThreadCount {
 public:
  explicit ThreadCount(int n) : saved_(at::get_num_threads()) { at::set_num_threads(n); }
  ~ThreadCount() { at::set_num_threads(saved_); }
  ThreadCount(const ThreadCount&) = delete;
  ThreadCount& operator=(const ThreadCount&) = delete;

 private:
  int saved_;
};

inline std::string isa_param_name(const ::testing::TestParamInfo<Isa>& info) {
  return std::string(isa_name(info.param));
}

// Skips the test when the CPU lacks the features of `isa`, else forces it for the test's scope.
#define FERRY_USE_ISA_OR_SKIP(isa)                                                   \
  if (const std::string missing = ::ferry::kernels::missing_features(isa);          \
      !missing.empty()) {                                                            \
    GTEST_SKIP() << "this CPU lacks " << missing << " for the "                      \
                 << ::ferry::kernels::isa_name(isa) << " kernels";                   \
  }                                                                                  \
  const ::ferry::kernels::ScopedIsa isa_guard(isa);                                  \
  ASSERT_EQ(::ferry::kernels::active_isa(), isa)

// The largest |got − want| ÷ (Σ_k |x_k · w_k| + tiny): float32 sums in another order differ by a
// few ulps of the sum of magnitudes, not of the (possibly cancelling) result.
inline double relative_error(const at::Tensor& got, const at::Tensor& want, const at::Tensor& x,
                             const at::Tensor& w_f32) {
  const at::Tensor magnitude = at::linear(x.to(at::kFloat).abs(), w_f32.abs()) + 1e-6;
  return ((got.to(at::kFloat) - want.to(at::kFloat)).abs() / magnitude).max().item<double>();
}

}  // namespace ferry::kernels::testing
