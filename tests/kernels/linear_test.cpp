// kernels::linear against at::linear in float32.
#include <gtest/gtest.h>

#include "ferry/core/error.h"
#include "ferry/kernels/linear.h"

namespace ferry::kernels {
namespace {

TEST(KernelsLinear, MatchesAtLinearForStoredDtypes) {
  at::manual_seed(0);
  for (const at::ScalarType stored : {at::kFloat, at::kBFloat16, at::kHalf}) {
    const at::Tensor w = at::randn({37, 19}).to(stored);
    const at::Tensor b = at::randn({37}).to(stored);
    const at::Tensor x = at::randn({3, 19});
    const at::Tensor got = kernels::linear(x, w, b);
    const at::Tensor want = at::linear(x, w.to(at::kFloat), b.to(at::kFloat));
    EXPECT_EQ(got.scalar_type(), at::kFloat);
    EXPECT_TRUE(at::allclose(got, want, 1e-4, 1e-4)) << c10::toString(stored);
  }
}

TEST(KernelsLinear, ShapeMismatchNamesTheModule) {
  const at::Tensor w = at::zeros({4, 5});
  try {
    kernels::linear(at::zeros({2, 6}), w, std::nullopt, "model.layers.0.mlp.up_proj");
    FAIL() << "expected ShapeMismatch";
  } catch (const ShapeMismatch& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.0.mlp.up_proj"), std::string::npos);
  }
}

}  // namespace
}  // namespace ferry::kernels
