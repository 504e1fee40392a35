#include <gtest/gtest.h>

#include "ferry/core/error.h"
#include "ferry/kernels/quantized.h"
#include "ferry/nn/activation.h"
#include "ferry/nn/init.h"
#include "ferry/nn/containers.h"
#include "ferry/nn/embedding.h"
#include "ferry/nn/linear.h"
#include "ferry/nn/norm.h"

namespace ferry::nn {
namespace {

const at::Tensor& param(Module& m, const char* name) { return m.find_tensor(name).tensor(); }

class Layers : public ::testing::Test {
 protected:
  void SetUp() override { at::manual_seed(0); }
};

// Note [int8 Linear weights]: int8 `weight` + float32 `weight_scale` [out, in / 32].
TEST_F(Layers, Int8LinearHoldsValuesAndScalesAndComputesWithThem) {
  Linear lin(64, 8);
  const at::Tensor x = at::randn({3, 64});
  const at::Tensor exact = lin(x);
  const kernels::QuantizedWeight expected =
      kernels::quantize(lin.weight(), kernels::QuantScheme::kGroup32);
  lin.quantize_int8();
  EXPECT_TRUE(lin.is_quantized());
  EXPECT_EQ(lin.weight().scalar_type(), at::kChar);
  EXPECT_TRUE(at::equal(lin.weight(), expected.values));
  EXPECT_TRUE(at::equal(param(lin, "weight_scale"), expected.scales));
  EXPECT_EQ(lin.named_parameters().size(), 3U);  // weight, bias, weight_scale
  const at::Tensor y = lin(x);
  EXPECT_TRUE(at::allclose(y, kernels::linear(x, expected, param(lin, "bias")), 1e-5, 1e-6));
  const double error = (y - exact).abs().max().item<double>();
  EXPECT_GT(error, 0.0);
  EXPECT_LT(error, 0.02 * exact.abs().max().item<double>());
  EXPECT_THROW(lin.quantize_int8(), InvalidArgument);
}

TEST_F(Layers, Int8LinearOnMetaIsRetypedAndOnlyWidthsOf32AreQuantized) {
  InitEmptyWeights guard;
  Sequential seq;
  seq.push_back(std::make_shared<Linear>(96, 16));
  seq.push_back(std::make_shared<Linear>(16, 40));  // in = 16: not a multiple of 32
  const std::vector<std::string> quantized =
      quantize_linears(seq, [](const std::string&) { return true; });
  EXPECT_EQ(quantized, (std::vector<std::string>{"0.weight"}));
  const at::Tensor scale = seq.find_tensor("0.weight_scale").tensor();
  EXPECT_TRUE(scale.is_meta());
  EXPECT_EQ(scale.sizes(), (std::vector<std::int64_t>{16, 3}));
  EXPECT_EQ(seq.find_tensor("0.weight").tensor().scalar_type(), at::kChar);
  EXPECT_EQ(seq.find_tensor("1.weight").tensor().scalar_type(), at::kFloat);
  EXPECT_THROW(Linear(16, 40).quantize_int8(), InvalidArgument);
}

TEST_F(Layers, LinearEqualsFunctional) {
  Linear lin(5, 3);
  EXPECT_EQ(lin.weight().sizes(), (std::vector<std::int64_t>{3, 5}));
  const at::Tensor x = at::randn({2, 4, 5});
  // The fused float32 kernel sums in another order than BLAS (Note [float32 weights]).
  EXPECT_TRUE(at::allclose(lin(x), at::linear(x, param(lin, "weight"), param(lin, "bias")), 1e-5,
                           1e-6));
  Linear nobias(5, 3, LinearOptions{.bias = false, .dtype = at::kDouble});
  EXPECT_EQ(nobias.named_parameters().size(), 1U);
  const at::Tensor xd = x.to(at::kDouble);
  EXPECT_TRUE(at::equal(nobias(xd), at::linear(xd, nobias.weight())));
}

TEST_F(Layers, LinearDefaultInitIsBoundedByFanIn) {
  Linear lin(100, 50);
  EXPECT_LE(lin.weight().abs().max().item<float>(), 0.1F);
  EXPECT_GT(lin.weight().abs().max().item<float>(), 0.0F);
}

TEST_F(Layers, Conv1DEqualsAddmm) {
  Conv1D conv(6, 4);  // nf = 6 outputs, nx = 4 inputs
  EXPECT_EQ(param(conv, "weight").sizes(), (std::vector<std::int64_t>{4, 6}));
  conv.set_tensor("bias", at::randn({6}));
  const at::Tensor x = at::randn({2, 3, 4});
  const at::Tensor expected =
      at::addmm(param(conv, "bias"), x.reshape({-1, 4}), param(conv, "weight")).view({2, 3, 6});
  EXPECT_TRUE(at::equal(conv(x), expected));
  // Conv1D is a Linear with a transposed weight.
  EXPECT_TRUE(at::allclose(conv(x), at::linear(x, param(conv, "weight").t(), param(conv, "bias")),
                           1e-5, 1e-6));
}

TEST_F(Layers, EmbeddingEqualsFunctional) {
  Embedding emb(10, 4);
  const at::Tensor ids = at::tensor({1, 7, 7, 0}, at::kLong).view({2, 2});
  EXPECT_TRUE(at::equal(emb(ids), at::embedding(emb.weight(), ids)));
  EXPECT_EQ(emb(ids).sizes(), (std::vector<std::int64_t>{2, 2, 4}));
}

TEST_F(Layers, LayerNormEqualsFunctional) {
  LayerNorm ln(8, LayerNormOptions{.eps = 1e-6});
  ln.set_tensor("weight", at::randn({8}));
  ln.set_tensor("bias", at::randn({8}));
  const at::Tensor x = at::randn({3, 8});
  EXPECT_TRUE(
      at::equal(ln(x), at::layer_norm(x, {8}, param(ln, "weight"), param(ln, "bias"), 1e-6)));
  LayerNorm plain(8, LayerNormOptions{.elementwise_affine = false});
  EXPECT_TRUE(plain.named_parameters().empty());
  EXPECT_TRUE(at::equal(plain(x), at::layer_norm(x, {8})));
}

TEST_F(Layers, RMSNormMatchesLlamaFormula) {
  RMSNorm norm(8, 1e-5);
  norm.set_tensor("weight", at::randn({8}));
  const at::Tensor x = at::randn({2, 3, 8});
  const at::Tensor expected =
      param(norm, "weight") * (x * at::rsqrt(x.pow(2).mean(-1, true) + 1e-5));
  EXPECT_TRUE(at::allclose(norm(x), expected, 1e-6, 1e-6));
  // Half input: normalised in float32, cast back before the weight.
  RMSNorm half(8, 1e-5, at::kHalf);
  const at::Tensor xh = x.to(at::kHalf);
  const at::Tensor h = xh.to(at::kFloat);
  const at::Tensor expected_half =
      param(half, "weight") * (h * at::rsqrt(h.pow(2).mean(-1, true) + 1e-5)).to(at::kHalf);
  EXPECT_EQ(half(xh).scalar_type(), at::kHalf);
  EXPECT_TRUE(at::equal(half(xh), expected_half));
}

TEST_F(Layers, BatchNorm1dInferenceUsesRunningStats) {
  BatchNorm1d bn(4, BatchNormOptions{.eps = 1e-3});
  bn.set_tensor("running_mean", at::randn({4}));
  bn.set_tensor("running_var", at::rand({4}) + 0.5);
  bn.set_tensor("weight", at::randn({4}));
  bn.set_tensor("bias", at::randn({4}));
  const at::Tensor x = at::randn({5, 4});
  const at::Tensor expected = (x - param(bn, "running_mean")) /
                                  at::sqrt(param(bn, "running_var") + 1e-3) * param(bn, "weight") +
                              param(bn, "bias");
  EXPECT_TRUE(at::allclose(bn(x), expected, 1e-5, 1e-6));
  const at::Tensor x3 = at::randn({5, 4, 7});  // [N, C, L]
  EXPECT_TRUE(at::allclose(
      bn(x3), at::batch_norm(x3, param(bn, "weight"), param(bn, "bias"), param(bn, "running_mean"),
                             param(bn, "running_var"), false, 0.1, 1e-3, false)));
  EXPECT_EQ(param(bn, "num_batches_tracked").dim(), 0);
  EXPECT_EQ(param(bn, "num_batches_tracked").scalar_type(), at::kLong);
}

TEST_F(Layers, ActivationsEqualFunctional) {
  const at::Tensor x = at::randn({10});
  EXPECT_TRUE(at::equal(Activation(ActivationKind::kReLU)(x), at::relu(x)));
  EXPECT_TRUE(at::equal(Activation(ActivationKind::kGELU)(x), at::gelu(x)));
  EXPECT_TRUE(at::equal(Activation(ActivationKind::kGELUTanh)(x), at::gelu(x, "tanh")));
  EXPECT_TRUE(at::equal(Activation(ActivationKind::kSiLU)(x), at::silu(x)));
  EXPECT_TRUE(at::equal(Activation(ActivationKind::kTanh)(x), at::tanh(x)));
  EXPECT_TRUE(at::equal(Activation(ActivationKind::kSigmoid)(x), at::sigmoid(x)));
  EXPECT_TRUE(at::equal(Activation(ActivationKind::kIdentity)(x), x));
  EXPECT_EQ(activation_from_name("gelu_new"), ActivationKind::kGELUTanh);
  EXPECT_EQ(activation_from_name("swish"), ActivationKind::kSiLU);
  EXPECT_EQ(Activation(ActivationKind::kSiLU).class_name(), "SiLU");
  EXPECT_THROW(activation_from_name("mish"), InvalidArgument);
}

TEST_F(Layers, SequentialChainsAndContainersIndex) {
  Sequential seq;
  auto l1 = seq.push_back(std::make_shared<Linear>(4, 8));
  seq.push_back(std::make_shared<Activation>(ActivationKind::kReLU));
  auto l2 = seq.push_back(std::make_shared<Linear>(8, 2));
  const at::Tensor x = at::randn({3, 4});
  EXPECT_TRUE(at::equal(seq(x), (*l2)(at::relu((*l1)(x)))));
  EXPECT_EQ(seq.size(), 3U);

  ModuleList list;
  list.push_back(std::make_shared<Linear>(1, 1));
  list.push_back(std::make_shared<RMSNorm>(3));
  EXPECT_EQ(list.size(), 2U);
  EXPECT_EQ(list[1].class_name(), "RMSNorm");
  EXPECT_NO_THROW(list.at<RMSNorm>(1));
  EXPECT_THROW(list.at<Linear>(1), InvalidArgument);
  EXPECT_THROW(list.at<Linear>(5), InvalidArgument);

  ModuleDict dict;
  dict.insert("proj", std::make_shared<Linear>(1, 1));
  EXPECT_TRUE(dict.contains("proj"));
  EXPECT_EQ(dict.at<Linear>("proj").in_features(), 1);
  EXPECT_THROW(dict.at<Linear>("missing"), MissingTensor);
  EXPECT_THROW(dict.insert("proj", std::make_shared<Linear>(1, 1)), InvalidArgument);
}

TEST_F(Layers, ClassNamesForNoSplit) {
  EXPECT_EQ(Linear(1, 1).class_name(), "Linear");
  EXPECT_EQ(Conv1D(1, 1).class_name(), "Conv1D");
  EXPECT_EQ(Embedding(1, 1).class_name(), "Embedding");
  EXPECT_EQ(LayerNorm(1).class_name(), "LayerNorm");
  EXPECT_EQ(BatchNorm1d(1).class_name(), "BatchNorm1d");
  EXPECT_EQ(Sequential().class_name(), "Sequential");
  EXPECT_EQ(ModuleList().class_name(), "ModuleList");
}

}  // namespace
}  // namespace ferry::nn
