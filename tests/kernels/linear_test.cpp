// kernels::linear, each instruction-set variant the CPU has, against at::linear in float32 on the
// upcast weight.
#include "ferry/kernels/linear.h"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "ferry/core/error.h"
#include "test_util.h"

namespace ferry::kernels {
namespace {

using testing::relative_error;

constexpr double kTolerance = 1e-5;  // × Σ|x·w|: a few float32 ulps, summed in another order
const at::ScalarType kStored[] = {at::kFloat, at::kBFloat16, at::kHalf};

// Restores LibTorch's thread count when a test changes it.
class ThreadsGuard {
 public:
  ThreadsGuard() : saved_(at::get_num_threads()) {}
  ~ThreadsGuard() { at::set_num_threads(saved_); }

 private:
  int saved_;
};

// Compares kernels::linear with at::linear on the weight (and bias) upcast to float32.
void expect_matches(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& b,
                    const std::string& context) {
  const at::Tensor got = kernels::linear(x, w, b);
  const at::Tensor w32 = w.to(at::kFloat);
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor want = b ? at::linear(x32, w32, b->to(at::kFloat)) : at::linear(x32, w32);
  ASSERT_EQ(got.sizes(), want.sizes()) << context;
  EXPECT_EQ(got.scalar_type(), x.scalar_type()) << context;
  // x in bfloat16 / float16: the result is rounded to it too.
  const double rounding = x.scalar_type() == at::kFloat  ? 0.0
                          : x.scalar_type() == at::kHalf ? 1e-3
                                                         : 8e-3;
  const double bound = kTolerance + rounding;
  if (b) {
    // The bias is added after the product: compare against the magnitude of both.
    const at::Tensor magnitude = at::linear(x32.abs(), w32.abs(), b->to(at::kFloat).abs()) + 1e-6;
    const double err = ((got.to(at::kFloat) - want).abs() / magnitude).max().item<double>();
    EXPECT_LE(err, bound) << context;
  } else {
    EXPECT_LE(relative_error(got, want, x32, w32), bound) << context;
  }
}

// The variants under test read float32 weights too (Note [float32 weights]).
class KernelsLinear : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override { set_fused_float32(true); }
  void TearDown() override { set_fused_float32(true); }
};

TEST_P(KernelsLinear, OddShapesEveryStoredDtype) {
  FERRY_USE_ISA_OR_SKIP(GetParam());
  at::manual_seed(0);
  const std::int64_t sizes[] = {1, 3, 7, 15, 17, 33, 100, 257, 1000};
  for (const at::ScalarType stored : kStored) {
    for (const std::int64_t n : sizes) {
      for (const std::int64_t k : sizes) {
        for (const std::int64_t m : {1, 5}) {
          const at::Tensor w = at::randn({n, k}).to(stored);
          expect_matches(at::randn({m, k}), w, std::nullopt,
                         fmt::format("{} n={} k={} m={}", c10::toString(stored), n, k, m));
        }
      }
    }
  }
}

TEST_P(KernelsLinear, EveryDecodeRowCountWithAndWithoutBias) {
  FERRY_USE_ISA_OR_SKIP(GetParam());
  at::manual_seed(1);
  for (const at::ScalarType stored : kStored) {
    const at::Tensor w = at::randn({33, 257}).to(stored);
    for (std::int64_t m = 1; m <= 16; ++m) {
      const at::Tensor x = at::randn({m, 257});
      expect_matches(x, w, std::nullopt, fmt::format("{} m={}", c10::toString(stored), m));
      for (const at::ScalarType bias_dtype : kStored) {
        expect_matches(
            x, w, at::randn({33}).to(bias_dtype),
            fmt::format("{} m={} bias {}", c10::toString(stored), m, c10::toString(bias_dtype)));
      }
    }
  }
}

TEST_P(KernelsLinear, OneToFourThreads) {
  FERRY_USE_ISA_OR_SKIP(GetParam());
  const ThreadsGuard restore;
  at::manual_seed(2);
  for (int threads = 1; threads <= 4; ++threads) {
    at::set_num_threads(threads);
    for (const at::ScalarType stored : kStored) {
      const at::Tensor w = at::randn({1000, 1000}).to(stored);
      expect_matches(at::randn({3, 1000}), w, at::randn({1000}),
                     fmt::format("{} threads={}", c10::toString(stored), threads));
    }
  }
}

TEST_P(KernelsLinear, SlicedWeightAndOffsetInput) {
  FERRY_USE_ISA_OR_SKIP(GetParam());
  at::manual_seed(3);
  for (const at::ScalarType stored : kStored) {
    // Rows start at odd element offsets: no pointer is aligned to anything but the element.
    const at::Tensor buffer = at::randn({104, 263}).to(stored);
    const at::Tensor w = buffer.narrow(0, 1, 100).narrow(1, 3, 257);
    ASSERT_EQ(w.stride(1), 1);
    const at::Tensor x = at::randn({4, 260}).narrow(1, 1, 257);
    expect_matches(x, w, std::nullopt, c10::toString(stored));
  }
}

// Note [Rows read in runs]: k a whole number of runs (512 bytes: 128 float32, 256 16-bit
// weights), runs plus a tail of whole 32s, and runs plus a tail shorter than 32; enough rows for
// several blocks and a short last one, rows that do not start where the previous one ends.
TEST_P(KernelsLinear, RowsReadInRunsWithAndWithoutATail) {
  FERRY_USE_ISA_OR_SKIP(GetParam());
  at::manual_seed(7);
  for (const at::ScalarType stored : kStored) {
    for (const std::int64_t k : {128, 256, 512, 1024, 512 + 96, 768 + 5}) {
      for (const std::int64_t m : {1, 2, 3}) {
        const at::Tensor w = at::randn({37, k}).to(stored);
        const std::string context = fmt::format("{} k={} m={}", c10::toString(stored), k, m);
        expect_matches(at::randn({m, k}), w, std::nullopt, context);
        const at::Tensor wide = at::randn({37, k + 64}).to(stored).narrow(1, 32, k);
        expect_matches(at::randn({m, k}), wide, std::nullopt, context + " row stride k + 64");
      }
    }
  }
}

TEST_P(KernelsLinear, TransposedWeight) {
  FERRY_USE_ISA_OR_SKIP(GetParam());
  at::manual_seed(4);
  for (const at::ScalarType stored : kStored) {
    const at::Tensor w = at::randn({65, 300}).to(stored).t();  // [300, 65], stride(1) != 1
    expect_matches(at::randn({2, 65}), w, at::randn({300}), c10::toString(stored));
  }
}

TEST_P(KernelsLinear, PrefillRowsAndBatchDims) {
  FERRY_USE_ISA_OR_SKIP(GetParam());
  at::manual_seed(5);
  for (const at::ScalarType stored : kStored) {
    const at::Tensor w = at::randn({300, 129}).to(stored);  // two tiles, the second short
    for (const std::int64_t m : {17, 64, 200}) {
      expect_matches(at::randn({m, 129}), w, at::randn({300}).to(stored),
                     fmt::format("{} m={}", c10::toString(stored), m));
    }
    expect_matches(at::randn({2, 32, 129}), w, std::nullopt,
                   fmt::format("{} [2, 32, k]", c10::toString(stored)));
    expect_matches(at::randn({2, 3, 129}), w, std::nullopt,
                   fmt::format("{} [2, 3, k]", c10::toString(stored)));
  }
}

TEST_P(KernelsLinear, AlignedInputIsReadInPlaceAndEqualsTheGeneralPath) {
  // k a multiple of 16 with contiguous float32 x: the product reads x where it is (no reshape,
  // cast or padding). The same values through a strided view take the general path; both sum in
  // the same order, so they agree bit for bit, in every leading shape, with and without a bias.
  FERRY_USE_ISA_OR_SKIP(GetParam());
  at::manual_seed(7);
  for (const at::ScalarType stored : kStored) {
    const at::Tensor w = at::randn({37, 256}).to(stored);
    for (const auto& shape : std::vector<std::vector<std::int64_t>>{
             {256}, {1, 256}, {1, 1, 256}, {7, 256}, {2, 3, 256}, {16, 256}}) {
      const at::Tensor x = at::randn(shape);
      const at::Tensor strided = at::stack({x, x}, -1).select(-1, 0);  // stride 2
      ASSERT_FALSE(strided.is_contiguous());
      for (const std::optional<at::Tensor>& bias :
           {std::optional<at::Tensor>(), std::optional<at::Tensor>(at::randn({37}).to(stored))}) {
        const std::string context = fmt::format("{} x {} bias {}", c10::toString(stored),
                                                fmt::join(shape, "x"), bias.has_value());
        const at::Tensor direct = kernels::linear(x, w, bias);
        EXPECT_TRUE(at::equal(direct, kernels::linear(strided, w, bias))) << context;
        expect_matches(x, w, bias, context);
      }
    }
  }
}

TEST_P(KernelsLinear, ComputeDtypeInputKeepsItsDtype) {
  FERRY_USE_ISA_OR_SKIP(GetParam());
  at::manual_seed(6);
  for (const at::ScalarType x_dtype : {at::kBFloat16, at::kHalf}) {
    for (const at::ScalarType stored : kStored) {
      const at::Tensor w = at::randn({40, 70}).to(stored);
      for (const std::int64_t m : {1, 100}) {
        expect_matches(
            at::randn({m, 70}).to(x_dtype), w, at::randn({40}),
            fmt::format("x {} w {} m={}", c10::toString(x_dtype), c10::toString(stored), m));
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Isas, KernelsLinear,
                         ::testing::Values(Isa::kPortable, Isa::kAvx2, Isa::kAvx512,
                                           Isa::kAvx512Vnni),
                         testing::isa_param_name);

TEST(KernelsLinearEdges, Float32IsFusedByDefaultAndBitForBitWhenTurnedOff) {
  at::manual_seed(7);
  const at::Tensor x = at::randn({2, 4, 300});
  const at::Tensor w = at::randn({70, 300});
  const at::Tensor b = at::randn({70});
  ASSERT_TRUE(fused_float32());  // the default (FERRY_FUSED_FLOAT32 unset)
  EXPECT_TRUE(at::allclose(kernels::linear(x, w, b), at::linear(x, w, b), 1e-5, 1e-5));
  set_fused_float32(false);
  EXPECT_TRUE(at::equal(kernels::linear(x, w, b), at::linear(x, w, b)));
  set_fused_float32(true);
}

TEST(KernelsLinearEdges, Float64PassesThroughToAtLinear) {
  const at::Tensor x = at::randn({3, 5}, at::kDouble);
  const at::Tensor w = at::randn({4, 5}, at::kDouble);
  EXPECT_TRUE(at::equal(kernels::linear(x, w, std::nullopt), at::linear(x, w)));
}

TEST(KernelsLinearEdges, MetaTensorsGiveMetaShapes) {
  const auto meta = at::TensorOptions().device(at::kMeta);
  const at::Tensor y = kernels::linear(at::empty({2, 3, 5}, meta),
                                       at::empty({7, 5}, meta.dtype(at::kBFloat16)), std::nullopt);
  EXPECT_TRUE(y.is_meta());
  EXPECT_EQ(y.sizes(), at::IntArrayRef({2, 3, 7}));
}

TEST(KernelsLinearEdges, AutogradStillFlowsThroughTheWeight) {
  const at::Tensor w = at::ones({2, 2}).set_requires_grad(true);
  EXPECT_TRUE(kernels::linear(at::ones({1, 2}), w, std::nullopt).requires_grad());
}

TEST(KernelsLinearEdges, EmptyBatch) {
  const at::Tensor y =
      kernels::linear(at::zeros({0, 5}), at::ones({3, 5}).to(at::kHalf), std::nullopt);
  EXPECT_EQ(y.sizes(), at::IntArrayRef({0, 3}));
}

// Runs `body`, expecting an error of type E whose message contains every one of `needles`.
template <class E, class F>
void expect_error(F body, std::initializer_list<const char*> needles) {
  try {
    body();
    FAIL() << "expected an error";
  } catch (const E& e) {
    for (const char* needle : needles) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
          << "'" << needle << "' not in: " << e.what();
    }
  }
}

TEST(KernelsLinearErrors, ShapeMismatchNamesTheModule) {
  expect_error<ShapeMismatch>(
      [] {
        kernels::linear(at::zeros({2, 6}), at::zeros({4, 5}), std::nullopt,
                        "model.layers.0.mlp.up_proj");
      },
      {"model.layers.0.mlp.up_proj", "[2, 6]", "[4, 5]"});
}

TEST(KernelsLinearErrors, BiasOfTheWrongLength) {
  expect_error<ShapeMismatch>(
      [] {
        kernels::linear(at::zeros({2, 5}), at::zeros({4, 5}), at::zeros({3}), "lm_head");
      },
      {"lm_head", "bias", "[3]", "[4]"});
}

TEST(KernelsLinearErrors, UnsupportedWeightDtypeIsNamed) {
  for (const auto& [dtype, name] :
       {std::pair{at::kInt, "int32"}, std::pair{at::kDouble, "float64"}}) {
    expect_error<DTypeMismatch>(
        [dtype = dtype] {
          kernels::linear(at::zeros({2, 5}), at::zeros({4, 5}, at::TensorOptions().dtype(dtype)),
                          std::nullopt, "model.layers.1.self_attn.q_proj");
        },
        {"model.layers.1.self_attn.q_proj", "weight dtype", name});
  }
}

TEST(KernelsLinearErrors, UnsupportedInputDtypeIsNamed) {
  expect_error<DTypeMismatch>(
      [] {
        kernels::linear(at::zeros({2, 5}, at::kDouble), at::zeros({4, 5}), std::nullopt, "fc");
      },
      {"fc", "input dtype", "float64"});
}

}  // namespace
}  // namespace ferry::kernels
