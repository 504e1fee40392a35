// kernels::product_stats (Note [Where a step's time goes] in src/kernels/gemv.cpp): each pass of
// the decode kernels adds one call, the bytes of weight it read and its wall time, on the calling
// thread only; products that go to BLAS or LibTorch add nothing.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "ferry/kernels/linear.h"

namespace ferry::kernels {
namespace {

class KernelsProductStats : public ::testing::Test {
 protected:
  void SetUp() override { set_fused_float32(true); }
  void TearDown() override { set_fused_float32(true); }
};

// What `f` added to this thread's counters.
template <class F>
ProductStats added_by(F&& f) {
  const ProductStats before = product_stats();
  f();
  return product_stats() - before;
}

TEST_F(KernelsProductStats, EachPassAddsOneCallAndTheBytesOfWeightItRead) {
  at::manual_seed(0);
  const std::int64_t n = 37, k = 100;  // int8: ceil(100 / 32) = 4 groups a row
  const at::Tensor x = at::randn({1, k});
  const at::Tensor w = at::randn({n, k}) * 0.05;
  struct Case {
    const char* name;
    std::variant<at::Tensor, QuantizedWeight> weight;
    std::int64_t bytes;
  };
  const std::vector<Case> cases = {
      {"float32", w, n * k * 4},
      {"bfloat16", w.to(at::kBFloat16), n * k * 2},
      {"float16", w.to(at::kHalf), n * k * 2},
      {"int8/32, float16 scales", quantize(w, QuantScheme::kGroup32), n * k + n * 4 * 2},
      {"int8/32, float32 scales", quantize(w, QuantScheme::kGroup32, at::kFloat),
       n * k + n * 4 * 4},
      {"int8/channel", quantize(w, QuantScheme::kPerChannel), n * k + n * 2},
  };
  for (const Case& c : cases) {
    const ProductStats s = added_by([&] { linear(x, Product{.weight = c.weight}); });
    EXPECT_EQ(s.calls, 1) << c.name;
    EXPECT_EQ(s.weight_bytes, c.bytes) << c.name;
    EXPECT_GT(s.seconds, 0.0) << c.name;
  }
  // Five decode rows read each weight once: the same bytes as one.
  const ProductStats five = added_by([&] { linear(at::randn({5, k}), w, std::nullopt); });
  EXPECT_EQ(five.calls, 1);
  EXPECT_EQ(five.weight_bytes, n * k * 4);
}

TEST_F(KernelsProductStats, AGroupIsOnePassOverAllItsWeights) {
  const at::Tensor x = at::randn({1, 64});
  const std::vector<Product> qkv = {{.weight = at::randn({10, 64})},
                                    {.weight = at::randn({20, 64})},
                                    {.weight = at::randn({30, 64})}};
  const ProductStats s = added_by([&] { linear_group(x, qkv); });
  EXPECT_EQ(s.calls, 1);
  EXPECT_EQ(s.weight_bytes, (10 + 20 + 30) * 64 * 4);
}

TEST_F(KernelsProductStats, ProductsOutsideTheDecodeKernelsAreNotCounted) {
  const at::Tensor w = at::randn({8, 64});
  // Prefill-sized: BLAS on converted tiles.
  EXPECT_EQ(added_by([&] { linear(at::randn({17, 64}), w, std::nullopt); }).calls, 0);
  // float64: LibTorch's own product.
  EXPECT_EQ(added_by([&] {
              linear(at::randn({1, 64}, at::kDouble), w.to(at::kDouble), std::nullopt);
            }).calls,
            0);
  // float32 with the fused kernel turned off: at::linear.
  set_fused_float32(false);
  EXPECT_EQ(added_by([&] { linear(at::randn({1, 64}), w, std::nullopt); }).calls, 0);
}

TEST_F(KernelsProductStats, CountsBelongToTheCallingThread) {
  const at::Tensor w = at::randn({8, 64});
  ProductStats other;
  const ProductStats here = added_by([&] {
    std::thread t([&] {
      other = added_by([&] {
        linear(at::randn({1, 64}), w, std::nullopt);
        linear(at::randn({1, 64}), w, std::nullopt);
      });
    });
    t.join();
  });
  EXPECT_EQ(other.calls, 2);
  EXPECT_EQ(other.weight_bytes, 2 * 8 * 64 * 4);
  EXPECT_EQ(here.calls, 0);
  EXPECT_EQ(here.weight_bytes, 0);
}

}  // namespace
}  // namespace ferry::kernels
