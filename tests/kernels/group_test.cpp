// kernels::linear_group (Note [Grouped products]): several products of one input, in one pass at
// decode sizes, each bit for bit its own linear(); one linear() each where the pass does not
// apply; errors name the product at fault.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "ferry/core/error.h"
#include "ferry/kernels/linear.h"
#include "test_util.h"

namespace ferry::kernels {
namespace {

enum class Stored { kF32, kBF16, kF16, kInt8Group32, kInt8PerChannel };

std::string name_of(Stored s) {
  switch (s) {
    case Stored::kF32: return "float32";
    case Stored::kBF16: return "bfloat16";
    case Stored::kF16: return "float16";
    case Stored::kInt8Group32: return "int8/32";
    case Stored::kInt8PerChannel: return "int8/channel";
  }
  return "?";
}

Product make_product(Stored s, std::int64_t n, std::int64_t k, bool bias) {
  const at::Tensor w = at::randn({n, k}) * 0.05;
  Product p;
  switch (s) {
    case Stored::kF32: p.weight = w; break;
    case Stored::kBF16: p.weight = w.to(at::kBFloat16); break;
    case Stored::kF16: p.weight = w.to(at::kHalf); break;
    case Stored::kInt8Group32: p.weight = quantize(w, QuantScheme::kGroup32); break;
    case Stored::kInt8PerChannel: p.weight = quantize(w, QuantScheme::kPerChannel); break;
  }
  if (bias) p.bias = at::randn({n});
  return p;
}

// Each result of linear_group equals its own linear() bit for bit.
void expect_each_equals_its_own(const at::Tensor& x, const std::vector<Product>& products,
                                const std::string& context) {
  const std::vector<at::Tensor> got = linear_group(x, products);
  ASSERT_EQ(got.size(), products.size()) << context;
  for (std::size_t i = 0; i < products.size(); ++i) {
    const at::Tensor want = linear(x, products[i]);
    ASSERT_EQ(got[i].sizes(), want.sizes()) << context << " product " << i;
    EXPECT_EQ(got[i].scalar_type(), want.scalar_type()) << context << " product " << i;
    EXPECT_EQ(got[i].strides(), want.strides()) << context << " product " << i;
    EXPECT_TRUE(at::equal(got[i], want))
        << context << " product " << i << " max diff " << (got[i] - want).abs().max().item<float>();
  }
}

class KernelsLinearGroup : public ::testing::TestWithParam<Isa> {};

TEST_P(KernelsLinearGroup, EachProductEqualsItsOwnLinearEveryFormatRowCountAndThreadCount) {
  // Sizes of odd row counts (a short last block of 4 rows, one smaller than a block) and large
  // enough that the threads' chunks span two weights.
  FERRY_USE_ISA_OR_SKIP(GetParam());
  at::manual_seed(11);
  const std::int64_t k = 256;
  for (const Stored s :
       {Stored::kF32, Stored::kBF16, Stored::kF16, Stored::kInt8Group32, Stored::kInt8PerChannel}) {
    const std::vector<Product> products{make_product(s, 3001, k, false),
                                        make_product(s, 3, k, true),
                                        make_product(s, 1502, k, true)};
    for (const int t : {1, 2, 3, 4}) {
      const testing::ThreadCount count(t);
      for (const auto& shape : std::vector<std::vector<std::int64_t>>{
               {256}, {1, 1, 256}, {7, 256}, {2, 3, 256}, {16, 256}}) {
        expect_each_equals_its_own(
            at::randn(shape), products,
            fmt::format("{} threads {} x [{}]", name_of(s), t, fmt::join(shape, ", ")));
      }
    }
  }
}

TEST_P(KernelsLinearGroup, OutsideTheSharedPassEachProductStillEqualsItsOwn) {
  // Mixed formats, a strided or non-float32 input, prefill rows, k not a multiple of 16, one
  // product, a transposed weight: one linear() each, the same values.
  FERRY_USE_ISA_OR_SKIP(GetParam());
  at::manual_seed(12);
  const std::vector<Product> mixed{make_product(Stored::kF32, 40, 64, true),
                                   make_product(Stored::kBF16, 24, 64, false),
                                   make_product(Stored::kInt8Group32, 8, 64, true)};
  const at::Tensor x = at::randn({3, 64});
  expect_each_equals_its_own(x, mixed, "mixed formats");
  expect_each_equals_its_own(at::stack({x, x}, -1).select(-1, 0), mixed, "strided x");
  expect_each_equals_its_own(x.to(at::kBFloat16), mixed, "bfloat16 x");
  expect_each_equals_its_own(at::randn({2, 17, 64}), mixed, "prefill rows");
  const std::vector<Product> odd_k{make_product(Stored::kF16, 33, 40, true),
                                   make_product(Stored::kF16, 9, 40, false)};
  expect_each_equals_its_own(at::randn({2, 40}), odd_k, "k = 40");
  expect_each_equals_its_own(x, {make_product(Stored::kInt8Group32, 70, 64, false)}, "one");
  Product transposed{.weight = at::randn({64, 30}).t()};
  expect_each_equals_its_own(x, {transposed, make_product(Stored::kF32, 30, 64, false)},
                             "transposed weight");
}

INSTANTIATE_TEST_SUITE_P(Isas, KernelsLinearGroup,
                         ::testing::Values(Isa::kPortable, Isa::kAvx2, Isa::kAvx512,
                                           Isa::kAvx512Vnni),
                         testing::isa_param_name);

TEST(KernelsLinearGroupErrors, AMismatchNamesTheProductAtFault) {
  const at::Tensor x = at::randn({1, 64});
  std::vector<Product> products{make_product(Stored::kBF16, 8, 64, false),
                                make_product(Stored::kBF16, 8, 48, false),
                                make_product(Stored::kBF16, 8, 64, false)};
  products[0].what = "layers.0.self_attn.q_proj";
  products[1].what = "layers.0.self_attn.k_proj";
  products[2].what = "layers.0.self_attn.v_proj";
  try {
    linear_group(x, products);
    FAIL() << "expected ShapeMismatch";
  } catch (const ShapeMismatch& e) {
    EXPECT_NE(std::string(e.what()).find("layers.0.self_attn.k_proj"), std::string::npos)
        << e.what();
  }
  products[1] = make_product(Stored::kInt8Group32, 8, 64, false);
  products[1].what = "layers.0.mlp.up_proj";
  products[1].bias = at::zeros({9});
  EXPECT_THROW(
      {
        try {
          linear_group(x, products);
        } catch (const ShapeMismatch& e) {
          EXPECT_NE(std::string(e.what()).find("layers.0.mlp.up_proj"), std::string::npos);
          throw;
        }
      },
      ShapeMismatch);
}

}  // namespace
}  // namespace ferry::kernels
