// Weight-only int8: quantize's round trip and the fused kernel against the float32 product.
#include <gtest/gtest.h>

#include "ferry/core/error.h"
#include "ferry/kernels/quantized.h"
#include "test_util.h"

namespace ferry::kernels {
namespace {

const QuantScheme kSchemes[] = {QuantScheme::kGroup32, QuantScheme::kPerChannel};

const char* scheme_name(QuantScheme s) {
  return s == QuantScheme::kGroup32 ? "group32" : "per-channel";
}

TEST(KernelsQuantize, ValuesWithinHalfAStepOfTheWeight) {
  at::manual_seed(0);
  for (const QuantScheme scheme : kSchemes) {
    const at::Tensor w = at::randn({9, 70});  // 70: the last group of 32 is short
    const QuantizedWeight q = quantize(w, scheme);
    EXPECT_EQ(q.values.scalar_type(), at::kChar);
    EXPECT_EQ(q.scales.sizes(),
              at::IntArrayRef({9, scheme == QuantScheme::kGroup32 ? 3 : 1}));
    EXPECT_LE(q.values.abs().max().item<int>(), 127);
    // |w − value × scale| ≤ scale ÷ 2, and a group's scale ≤ the row's.
    EXPECT_LE((q.dequantize() - w).abs().max().item<double>(),
              (w.abs().max() / 127 / 2).item<double>() + 1e-6)
        << scheme_name(scheme);
  }
}

TEST(KernelsQuantize, ZeroRowsStayZero) {
  const QuantizedWeight q = quantize(at::zeros({2, 40}), QuantScheme::kGroup32);
  EXPECT_TRUE(at::equal(q.dequantize(), at::zeros({2, 40})));
}

class KernelsQuantizedLinear : public ::testing::TestWithParam<Isa> {};

// The fused kernel computes exactly x · dequantize(w)ᵀ, up to float32 summation order.
TEST_P(KernelsQuantizedLinear, MatchesTheDequantizedProduct) {
  FERRY_USE_ISA_OR_SKIP(GetParam());
  at::manual_seed(1);
  for (const QuantScheme scheme : kSchemes) {
    for (const std::int64_t k : {1, 7, 33, 100, 257, 1000}) {
      for (const std::int64_t n : {1, 17, 100}) {
        const QuantizedWeight q = quantize(at::randn({n, k}).to(at::kBFloat16), scheme);
        for (const std::int64_t m : {1, 3, 16, 40}) {
          const at::Tensor x = at::randn({m, k});
          const at::Tensor b = at::randn({n});
          const at::Tensor got = kernels::linear(x, q, b);
          const at::Tensor want = at::linear(x, q.dequantize(), b);
          const at::Tensor magnitude = at::linear(x.abs(), q.dequantize().abs(), b.abs()) + 1e-6;
          EXPECT_LE(((got - want).abs() / magnitude).max().item<double>(), 1e-5)
              << scheme_name(scheme) << " n=" << n << " k=" << k << " m=" << m;
        }
      }
    }
  }
}

// Against the float32 weight: each element is off by at most half its group's step, so
// |y − y_f32| ≤ Σ_k |x_k| · scale(k) ÷ 2.
TEST_P(KernelsQuantizedLinear, ErrorWithinTheQuantizationBound) {
  FERRY_USE_ISA_OR_SKIP(GetParam());
  at::manual_seed(2);
  for (const QuantScheme scheme : kSchemes) {
    const at::Tensor w = at::randn({64, 512}) * 0.02;
    const QuantizedWeight q = quantize(w, scheme);
    const at::Tensor x = at::randn({2, 512});
    const at::Tensor half_steps =
        (q.scheme == QuantScheme::kPerChannel ? q.scales.expand({64, 512})
                                              : q.scales.repeat_interleave(32, 1)) / 2;
    const at::Tensor bound = at::linear(x.abs(), half_steps) * (1 + 1e-4) + 1e-6;
    const at::Tensor err = (kernels::linear(x, q, std::nullopt) - at::linear(x, w)).abs();
    EXPECT_TRUE((err <= bound).all().item<bool>()) << scheme_name(scheme);
  }
}

TEST_P(KernelsQuantizedLinear, ComputeDtypeInputAndBatchDims) {
  FERRY_USE_ISA_OR_SKIP(GetParam());
  at::manual_seed(3);
  const QuantizedWeight q = quantize(at::randn({30, 50}), QuantScheme::kGroup32);
  const at::Tensor x = at::randn({2, 3, 50}).to(at::kBFloat16);
  const at::Tensor got = kernels::linear(x, q, std::nullopt);
  EXPECT_EQ(got.scalar_type(), at::kBFloat16);
  EXPECT_EQ(got.sizes(), at::IntArrayRef({2, 3, 30}));
  const at::Tensor want = at::linear(x.to(at::kFloat), q.dequantize());
  EXPECT_TRUE(at::allclose(got.to(at::kFloat), want, 2e-2, 2e-2));
}

INSTANTIATE_TEST_SUITE_P(Isas, KernelsQuantizedLinear,
                         ::testing::Values(Isa::kPortable, Isa::kAvx2, Isa::kAvx512),
                         testing::isa_param_name);

TEST(KernelsQuantizedErrors, ShapeMismatchNamesTheModule) {
  const QuantizedWeight q = quantize(at::randn({4, 5}), QuantScheme::kGroup32);
  try {
    kernels::linear(at::zeros({2, 6}), q, std::nullopt, "model.layers.2.mlp.down_proj");
    FAIL() << "expected ShapeMismatch";
  } catch (const ShapeMismatch& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.2.mlp.down_proj"), std::string::npos);
  }
}

TEST(KernelsQuantizedErrors, UnsupportedDtypeToQuantize) {
  try {
    quantize(at::zeros({4, 5}, at::kDouble), QuantScheme::kPerChannel);
    FAIL() << "expected DTypeMismatch";
  } catch (const DTypeMismatch& e) {
    EXPECT_NE(std::string(e.what()).find("float64"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ferry::kernels
