// Weight-only int8: quantize's round trip and the fused kernel against the float32 product.
#include "ferry/kernels/quantized.h"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "ferry/core/error.h"
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
    EXPECT_EQ(q.scales.sizes(), at::IntArrayRef({9, scheme == QuantScheme::kGroup32 ? 3 : 1}));
    EXPECT_LE(q.values.abs().max().item<int>(), 127);
    // |w − value × scale| ≤ scale ÷ 2, and a group's scale ≤ the row's.
    EXPECT_LE((q.dequantize() - w).abs().max().item<double>(),
              (w.abs().max() / 127 / 2).item<double>() + 1e-6)
        << scheme_name(scheme);
  }
}

// The rule is round to nearest, ties to even (std::nearbyint), in every group: a group whose
// max is 127 has scale 1, so its values are rounded as they are; random groups against nearbyint
// of value ÷ scale computed here.
TEST(KernelsQuantize, RoundsToNearestEvenLikeNearbyint) {
  const at::Tensor ties = at::tensor({127.0f, 0.5f, 1.5f, 2.5f, -0.5f, -2.5f, 126.5f, -3.5f,
                                      0.49999997f, -126.5f, 64.5f, 7.0f})
                              .view({1, 12});
  const QuantizedWeight q = quantize(ties, QuantScheme::kGroup32);
  ASSERT_EQ(q.scales.item<float>(), 1.0f);
  const std::vector<int> want = {127, 0, 2, 2, 0, -2, 126, -4, 0, -126, 64, 7};
  for (std::size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(q.values[0][static_cast<std::int64_t>(i)].item<int>(), want[i]) << "element " << i;
  }
  at::manual_seed(9);
  const at::Tensor w = at::randn({16, 96}) * 3;
  const QuantizedWeight r = quantize(w, QuantScheme::kGroup32);
  const at::Tensor scales = r.scales.repeat_interleave(32, 1);
  const at::Tensor expected = at::clamp(at::round(w / scales), -127, 127).to(at::kChar);
  // at::round rounds half to even too; w ÷ scale is the division the rule multiplies by the
  // inverse for, so allow a step on the rare value that lands within a rounding of a tie.
  const at::Tensor diff = (r.values.to(at::kInt) - expected.to(at::kInt)).abs();
  EXPECT_LE(diff.max().item<int>(), 1);
  EXPECT_LE(diff.sum().item<int>(), 2);
}

TEST(KernelsQuantize, ZeroRowsStayZero) {
  const QuantizedWeight q = quantize(at::zeros({2, 40}), QuantScheme::kGroup32);
  EXPECT_TRUE(at::equal(q.dequantize(), at::zeros({2, 40})));
}

TEST(KernelsQuantize, NonFiniteGroupGetsANanScaleAndZeroValues) {
  at::Tensor w = at::ones({2, 64});
  w[0][3] = std::numeric_limits<float>::infinity();
  w[1][40] = std::numeric_limits<float>::quiet_NaN();
  const QuantizedWeight q = quantize(w, QuantScheme::kGroup32);
  EXPECT_TRUE(std::isnan(q.scales[0][0].item<float>()));
  EXPECT_TRUE(std::isnan(q.scales[1][1].item<float>()));
  // The other groups as usual: 1 ÷ 127 rounded up to float16.
  EXPECT_EQ(q.scales.scalar_type(), at::kHalf);
  EXPECT_GE(q.scales[0][1].item<float>(), 1.0f / 127);
  EXPECT_LE(q.scales[0][1].item<float>() - 1.0f / 127, std::ldexp(1.0f / 127, -10));
  EXPECT_EQ(q.values[0].narrow(0, 0, 32).abs().max().item<int>(), 0);
  EXPECT_EQ(q.values[1].narrow(0, 32, 32).abs().max().item<int>(), 0);
  const QuantizedWeight f = quantize(w, QuantScheme::kGroup32, at::kFloat);
  EXPECT_TRUE(std::isnan(f.scales[0][0].item<float>()));
  EXPECT_EQ(f.scales[0][1].item<float>(), 1.0f / 127);
}

// Note [int8 scales in float16]: each scale is the smallest float16 ≥ max |w| ÷ 127, and the
// values are rounded against that stored scale, so every element stays within half a step of
// the scale actually used and no value is clamped. Per group, over magnitudes from float16's
// subnormals to its largest scale.
TEST(KernelsQuantize, HalfScalesRoundUpAndTheValuesUseThem) {
  at::manual_seed(12);
  for (const QuantScheme scheme : kSchemes) {
    for (const double magnitude : {1e-9, 1e-6, 3e-3, 0.02, 1.0, 5e3, 1e6}) {
      const at::Tensor w = at::randn({6, 70}) * magnitude;
      const QuantizedWeight q = quantize(w, scheme);
      ASSERT_EQ(q.scales.scalar_type(), at::kHalf);
      const std::int64_t group = q.group_size();
      const at::Tensor grouped_max =
          scheme == QuantScheme::kGroup32
              ? at::cat({w.abs(), at::zeros({6, 26})}, 1).view({6, 3, 32}).amax(-1)
              : w.abs().amax(-1, /*keepdim=*/true);
      const at::Tensor exact = grouped_max / 127;  // float32, as the rule computes it
      const at::Tensor stored = q.scales.to(at::kFloat);
      EXPECT_TRUE((stored >= exact).all().item<bool>()) << magnitude;
      // At most one float16 step above: 2^-10 relative for normals, 2^-24 absolute below.
      EXPECT_TRUE((stored - exact <= exact * std::ldexp(1.0, -10) + std::ldexp(1.0, -24))
                      .all()
                      .item<bool>())
          << magnitude;
      const at::Tensor steps = scheme == QuantScheme::kGroup32
                                   ? stored.repeat_interleave(32, 1).narrow(1, 0, 70)
                                   : stored.expand({6, 70});
      EXPECT_TRUE(((q.dequantize() - w).abs() <= steps / 2 * (1 + 1e-6)).all().item<bool>())
          << scheme_name(scheme) << " " << magnitude << " group " << group;
      EXPECT_LE(q.values.abs().max().item<int>(), 127);
    }
  }
}

TEST(KernelsQuantize, WeightBeyondHalfScalesIsAnErrorNamingItsRow) {
  at::Tensor w = at::randn({4, 64});
  w[2][40] = 9e6f;  // 9e6 ÷ 127 > 65504
  try {
    quantize(w, QuantScheme::kGroup32);
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("row 2 inputs [32, 64)"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("float32 scales"), std::string::npos) << e.what();
  }
  // With float32 scales it quantizes.
  const QuantizedWeight f = quantize(w, QuantScheme::kGroup32, at::kFloat);
  EXPECT_EQ(f.scales[2][1].item<float>(), 9e6f / 127);
  EXPECT_THROW(quantize(w, QuantScheme::kGroup32, at::kDouble), DTypeMismatch);
}

// Full groups of 32 are quantized by AVX-512 where the CPU has it (Note [int8 groups by
// AVX-512]): values and scales are the portable code's bit for bit, ties, zeros, non-finite,
// subnormal and huge groups included.
class KernelsQuantizeIsas : public ::testing::TestWithParam<Isa> {};

TEST_P(KernelsQuantizeIsas, EveryIsaQuantizesBitForBit) {
  at::manual_seed(11);
  at::Tensor w = at::randn({10, 96}) * 3;  // three full groups per row
  // Ties at scale 1 (the group's max is 127): 0.5, 1.5, 2.5, ... and their negatives.
  w[0] = at::cat({at::tensor({127.0f}), at::arange(1, 96).to(at::kFloat) * 0.5f - 24.0f});
  w[1].zero_();
  w[2][5] = std::numeric_limits<float>::quiet_NaN();
  w[3][40] = -std::numeric_limits<float>::infinity();
  w[4] = at::full({96}, 1e-40f);  // subnormal scale: its inverse overflows
  w[5] = at::randn({96}) * 1e-38f;
  w[6] = at::randn({96}).sign() * 3e38f;
  w[7] = at::randn({96}) * 0.0f * -1.0f;  // zeros of both signs
  w[8] = at::randn({96}) * 1e6f;
  // float32 scales (float16 ones hold no huge group, and take the portable rounding anyway).
  QuantizedWeight portable;
  {
    const ScopedIsa isa(Isa::kPortable);
    portable = quantize(w, QuantScheme::kGroup32, at::kFloat);
  }
  FERRY_USE_ISA_OR_SKIP(GetParam());
  const QuantizedWeight got = quantize(w, QuantScheme::kGroup32, at::kFloat);
  EXPECT_TRUE(at::equal(got.values, portable.values));
  EXPECT_TRUE(at::equal(got.scales.isnan(), portable.scales.isnan()));
  EXPECT_TRUE(at::equal(at::nan_to_num(got.scales, 0.0), at::nan_to_num(portable.scales, 0.0)));
  // And the decode product quantizes x by the same rule: x̃ · w̃ᵀ agrees with the portable one.
  const at::Tensor x = at::randn({3, 96});
  const QuantizedWeight q = quantize(at::randn({20, 96}), QuantScheme::kGroup32);
  at::Tensor want;
  {
    const ScopedIsa isa(Isa::kPortable);
    want = kernels::linear(x, q, std::nullopt);
  }
  EXPECT_TRUE(at::allclose(kernels::linear(x, q, std::nullopt), want, 1e-5, 1e-5));
}

INSTANTIATE_TEST_SUITE_P(Isas, KernelsQuantizeIsas,
                         ::testing::Values(Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Vnni),
                         testing::isa_param_name);

// The int8 decode product quantizes x's rows per group of 32 by quantize()'s own rule (Note
// [int8 activations]): the x it stands for, as float32.
at::Tensor quantized_x(const at::Tensor& x) {
  return quantize(x.to(at::kFloat), QuantScheme::kGroup32, at::kFloat).dequantize();
}

class KernelsQuantizedLinear : public ::testing::TestWithParam<Isa> {};

// Up to 16 rows (decode) the kernel computes exactly x̃ · w̃ᵀ — x̃ and w̃ the dequantized
// activation and weight — up to float32 summation order; beyond (prefill, BLAS on dequantized
// tiles) x · w̃ᵀ.
TEST_P(KernelsQuantizedLinear, MatchesTheDequantizedProduct) {
  FERRY_USE_ISA_OR_SKIP(GetParam());
  at::manual_seed(1);
  for (const QuantScheme scheme : kSchemes) {
    for (const std::int64_t k : {1, 7, 33, 100, 257, 1000, 1024, 1600}) {
      for (const std::int64_t n : {1, 17, 100}) {
        const at::Tensor w = at::randn({n, k}).to(at::kBFloat16);
        const QuantizedWeight q = quantize(w, scheme);
        // The same weight with float32 scales (an int8 model saved before float16 ones): the
        // products agree bit for bit when the float16 scales are widened.
        const QuantizedWeight wide{
            .values = q.values, .scales = q.scales.to(at::kFloat), .scheme = scheme};
        for (const std::int64_t m : {1, 2, 3, 16, 40}) {
          const at::Tensor x = at::randn({m, k});
          const at::Tensor xq = m <= 16 ? quantized_x(x) : x;
          const at::Tensor b = at::randn({n});
          const at::Tensor got = kernels::linear(x, q, b);
          const at::Tensor want = at::linear(xq, q.dequantize(), b);
          const at::Tensor magnitude = at::linear(xq.abs(), q.dequantize().abs(), b.abs()) + 1e-6;
          EXPECT_LE(((got - want).abs() / magnitude).max().item<double>(), 1e-5)
              << scheme_name(scheme) << " n=" << n << " k=" << k << " m=" << m;
          EXPECT_TRUE(at::equal(kernels::linear(x, wide, b), got))
              << scheme_name(scheme) << " n=" << n << " k=" << k << " m=" << m;
        }
      }
    }
  }
}

// Against the float32 product (Note [int8 activations]): y − y_f32 = Σ_k (w̃_k − w_k) x_k +
// Σ_k w̃_k (x̃_k − x_k), and each dequantized element is within half a step of its group, so
// |y − y_f32| ≤ Σ_k |x_k| · scale_w(k) ÷ 2 + Σ_k |w̃_k| · scale_x(k) ÷ 2 (decode rows; prefill
// rows have the first term only).
TEST_P(KernelsQuantizedLinear, ErrorWithinTheQuantizationBound) {
  FERRY_USE_ISA_OR_SKIP(GetParam());
  at::manual_seed(2);
  for (const QuantScheme scheme : kSchemes) {
    for (const std::int64_t m : {2, 20}) {
      const at::Tensor w = at::randn({64, 520}) * 0.02;  // 520: a short last group
      const QuantizedWeight q = quantize(w, scheme);
      const at::Tensor x = at::randn({m, 520});
      const at::Tensor scales = q.scales.to(at::kFloat);
      const at::Tensor w_half_steps = (q.scheme == QuantScheme::kPerChannel
                                           ? scales.expand({64, 520})
                                           : scales.repeat_interleave(32, 1).narrow(1, 0, 520)) /
                                      2;
      at::Tensor bound = at::linear(x.abs(), w_half_steps);
      if (m <= 16) {
        const QuantizedWeight xq = quantize(x, QuantScheme::kGroup32, at::kFloat);
        const at::Tensor x_half_steps = xq.scales.repeat_interleave(32, 1).narrow(1, 0, 520) / 2;
        bound += at::mm(x_half_steps, q.dequantize().abs().t());
      }
      bound = bound * (1 + 1e-4) + 1e-6;
      const at::Tensor err = (kernels::linear(x, q, std::nullopt) - at::linear(x, w)).abs();
      EXPECT_TRUE((err <= bound).all().item<bool>()) << scheme_name(scheme) << " m=" << m;
    }
  }
}

// Activation quantization's edge cases: an all-zero group, an all-zero row, magnitudes near
// the float32 limits (a power-of-two scaling of x scales y exactly), a non-finite element.
TEST_P(KernelsQuantizedLinear, ZeroGroupsAndRowsOfX) {
  FERRY_USE_ISA_OR_SKIP(GetParam());
  at::manual_seed(4);
  for (const QuantScheme scheme : kSchemes) {
    const QuantizedWeight q = quantize(at::randn({33, 100}), scheme);
    at::Tensor x = at::randn({3, 100});
    x[0].narrow(0, 32, 32).zero_();  // a whole group
    x[1].narrow(0, 96, 4).zero_();   // the short last group
    x[2].zero_();
    const at::Tensor got = kernels::linear(x, q, std::nullopt);
    const at::Tensor want = at::linear(quantized_x(x), q.dequantize());
    const at::Tensor magnitude = at::linear(x.abs(), q.dequantize().abs()) + 1e-6;
    EXPECT_LE(((got - want).abs() / magnitude).max().item<double>(), 1e-5) << scheme_name(scheme);
    EXPECT_TRUE(at::equal(got[2], at::zeros({33}))) << scheme_name(scheme);
  }
}

TEST_P(KernelsQuantizedLinear, HugeAndTinyInputsScaleExactly) {
  FERRY_USE_ISA_OR_SKIP(GetParam());
  at::manual_seed(5);
  for (const QuantScheme scheme : kSchemes) {
    const QuantizedWeight q = quantize(at::randn({20, 70}) * 0.02, scheme);
    const at::Tensor x = at::randn({2, 70});
    const at::Tensor y = kernels::linear(x, q, std::nullopt);
    for (const double power : {-100.0, 90.0}) {
      const double factor = std::ldexp(1.0, static_cast<int>(power));
      const at::Tensor scaled = kernels::linear(x * factor, q, std::nullopt);
      EXPECT_TRUE(at::equal(scaled, y * factor)) << scheme_name(scheme) << " 2^" << power;
    }
    // Subnormal x: the scale loses precision (or underflows to 0), never gives inf or NaN.
    const at::Tensor tiny = kernels::linear(x * 1e-42, q, std::nullopt);
    EXPECT_TRUE(at::isfinite(tiny).all().item<bool>()) << scheme_name(scheme);
    EXPECT_LE(tiny.abs().max().item<double>(), 1e-38) << scheme_name(scheme);
  }
}

TEST_P(KernelsQuantizedLinear, NonFiniteInputGivesNanRowsOnly) {
  FERRY_USE_ISA_OR_SKIP(GetParam());
  at::manual_seed(6);
  const QuantizedWeight q = quantize(at::randn({9, 64}), QuantScheme::kGroup32);
  at::Tensor x = at::randn({3, 64});
  x[0][5] = std::numeric_limits<float>::infinity();
  x[1][40] = std::numeric_limits<float>::quiet_NaN();
  const at::Tensor got = kernels::linear(x, q, std::nullopt);
  EXPECT_TRUE(at::isnan(got.narrow(0, 0, 2)).all().item<bool>());
  EXPECT_TRUE(at::allclose(got[2], at::linear(quantized_x(x.narrow(0, 2, 1)), q.dequantize())[0],
                           1e-5, 1e-5));
}

// A weight that is a view into a wider one: rows w_stride apart, the short last group's bytes
// followed by the next row's.
TEST_P(KernelsQuantizedLinear, SlicedValuesAndEveryThreadCount) {
  FERRY_USE_ISA_OR_SKIP(GetParam());
  at::manual_seed(7);
  const int saved_threads = at::get_num_threads();
  const QuantizedWeight wide = quantize(at::randn({101, 128}), QuantScheme::kGroup32);
  const QuantizedWeight q{.values = wide.values.narrow(1, 0, 75),
                          .scales = wide.scales.narrow(1, 0, 3).contiguous(),
                          .scheme = QuantScheme::kGroup32};
  ASSERT_EQ(q.values.stride(0), 128);
  for (int threads = 1; threads <= 4; ++threads) {
    at::set_num_threads(threads);
    const at::Tensor x = at::randn({5, 75});
    const at::Tensor got = kernels::linear(x, q, std::nullopt);
    const at::Tensor want = at::linear(quantized_x(x), q.dequantize());
    const at::Tensor magnitude = at::linear(x.abs(), q.dequantize().abs()) + 1e-6;
    EXPECT_LE(((got - want).abs() / magnitude).max().item<double>(), 1e-5) << "threads=" << threads;
  }
  at::set_num_threads(saved_threads);
}

TEST_P(KernelsQuantizedLinear, ComputeDtypeInputAndBatchDims) {
  FERRY_USE_ISA_OR_SKIP(GetParam());
  at::manual_seed(3);
  const QuantizedWeight q = quantize(at::randn({30, 50}), QuantScheme::kGroup32);
  const at::Tensor x = at::randn({2, 3, 50}).to(at::kBFloat16);
  const at::Tensor got = kernels::linear(x, q, std::nullopt);
  EXPECT_EQ(got.scalar_type(), at::kBFloat16);
  EXPECT_EQ(got.sizes(), at::IntArrayRef({2, 3, 30}));
  const at::Tensor want = at::linear(quantized_x(x.reshape({6, 50})), q.dequantize());
  EXPECT_TRUE(at::allclose(got.to(at::kFloat).reshape({6, 30}), want, 2e-2, 2e-2));
}

TEST_P(KernelsQuantizedLinear, AlignedInputIsReadInPlaceAndEqualsTheGeneralPath) {
  // Contiguous float32 x with k a multiple of 16 is read where it is; a strided view of the same
  // values takes the general path, and the two agree bit for bit.
  FERRY_USE_ISA_OR_SKIP(GetParam());
  at::manual_seed(4);
  for (const QuantScheme scheme : kSchemes) {
    const QuantizedWeight q = quantize(at::randn({41, 320}), scheme);
    for (const auto& shape :
         std::vector<std::vector<std::int64_t>>{{320}, {1, 320}, {2, 3, 320}, {16, 320}}) {
      const at::Tensor x = at::randn(shape);
      const at::Tensor strided = at::stack({x, x}, -1).select(-1, 0);  // stride 2
      ASSERT_FALSE(strided.is_contiguous());
      const at::Tensor b = at::randn({41});
      const at::Tensor direct = kernels::linear(x, q, b);
      EXPECT_EQ(direct.sizes().back(), 41);
      EXPECT_TRUE(at::equal(direct, kernels::linear(strided, q, b)))
          << scheme_name(scheme) << " x " << x.sizes();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Isas, KernelsQuantizedLinear,
                         ::testing::Values(Isa::kPortable, Isa::kAvx2, Isa::kAvx512,
                                           Isa::kAvx512Vnni),
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
