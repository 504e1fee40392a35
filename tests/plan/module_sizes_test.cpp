#include "ferry/plan/module_sizes.h"

#include <gtest/gtest.h>

#include "ferry/core/error.h"
#include "ferry/plan/module_tree.h"
#include "plan/plan_test_util.h"

namespace ferry::plan {
namespace {

using testing::Holder;
using testing::ModelForTest;

std::map<std::string, std::uint64_t> bytes_of(const ModuleSizes& sizes) {
  std::map<std::string, std::uint64_t> out;
  for (const auto& [name, bits] : sizes.entries()) out[name] = bits / 8;
  return out;
}

TEST(ComputeModuleSizes, ModelForTestExactBytes) {
  ModelForTest model;
  const ModuleSizes sizes = compute_module_sizes(model);
  const std::map<std::string, std::uint64_t> expected{{"", 236},
                                                      {"linear1", 64},
                                                      {"linear1.weight", 48},
                                                      {"linear1.bias", 16},
                                                      {"batchnorm", 72},
                                                      {"batchnorm.weight", 16},
                                                      {"batchnorm.bias", 16},
                                                      {"batchnorm.running_mean", 16},
                                                      {"batchnorm.running_var", 16},
                                                      {"batchnorm.num_batches_tracked", 8},
                                                      {"linear2", 100},
                                                      {"linear2.weight", 80},
                                                      {"linear2.bias", 20}};
  EXPECT_EQ(bytes_of(sizes), expected);
  // Insertion order of Accelerate's dict: prefixes of the parameters first, then buffers.
  EXPECT_EQ(sizes.entries()[0].first, "");
  EXPECT_EQ(sizes.entries()[1].first, "linear1");
  EXPECT_EQ(sizes.entries().back().first, "batchnorm.num_batches_tracked");
  EXPECT_EQ(sizes.bytes("nothing.here"), 0U);
}

TEST(ComputeModuleSizes, HalfModelKeepsIntegerBuffers) {
  ModelForTest model;
  for (const auto& [name, t] : model.state_dict()) {
    if (t.is_floating_point()) model.set_tensor(name, t.to(at::kHalf));
  }
  const ModuleSizes sizes = compute_module_sizes(model);
  EXPECT_EQ(sizes.bytes(""), 236U / 2 + 4);
  EXPECT_EQ(sizes.bytes("batchnorm"), 72U / 2 + 4);
  EXPECT_EQ(sizes.bytes("batchnorm.num_batches_tracked"), 8U);
}

TEST(ComputeModuleSizes, DtypeMinRuleSparesIntegersAndSpecialDtypesOverride) {
  Holder model("ModelSeveralDtypes");
  model.register_buffer("int_param", at::zeros({15, 30}, at::kLong));
  model.register_parameter("float_param", at::zeros({10, 5}));
  const ModuleSizes half = compute_module_sizes(model, {.dtype = DType::kF16});
  EXPECT_EQ(half.bytes("int_param"), 15U * 30 * 8);
  EXPECT_EQ(half.bytes("float_param"), 10U * 5 * 2);
  // min(): a wider dtype never grows a tensor.
  EXPECT_EQ(compute_module_sizes(model, {.dtype = DType::kF64}).bytes("float_param"), 200U);
  const ModuleSizes special = compute_module_sizes(
      model, {.dtype = DType::kF16, .special_dtypes = {{"float_param", DType::kF64}}});
  EXPECT_EQ(special.bytes("float_param"), 400U);
}

TEST(ComputeModuleSizes, ComplexAndQuantizedTensorsAreSized) {
  // Types safetensors cannot store are still measured: complex64 8 bytes, complex128 16.
  Holder model("Spectral");
  model.register_parameter("filter", at::zeros({3, 5}, at::kComplexFloat));
  model.register_buffer("twiddle", at::zeros({2}, at::kComplexDouble));
  model.register_buffer("codes", at::quantize_per_tensor(at::zeros({8}), 0.1, 0, at::kQInt8));
  const ModuleSizes sizes = compute_module_sizes(model);
  EXPECT_EQ(sizes.bytes("filter"), 15U * 8);
  EXPECT_EQ(sizes.bytes("twiddle"), 2U * 16);
  EXPECT_EQ(sizes.bytes("codes"), 8U);
  EXPECT_EQ(sizes.bytes(""), 15U * 8 + 2 * 16 + 8);
  // Each equals what LibTorch holds for it.
  for (const auto& [name, t] : model.state_dict()) {
    EXPECT_EQ(sizes.bytes(name), static_cast<std::uint64_t>(t.numel()) * t.element_size()) << name;
  }
  // Accelerate's min rule spares only integers and bool: a complex tensor counts the target's
  // size, a quantized one too.
  const ModuleSizes half = compute_module_sizes(model, {.dtype = DType::kF16});
  EXPECT_EQ(half.bytes("filter"), 15U * 2);
  EXPECT_EQ(half.bytes("codes"), 8U);  // min(1, 2) bytes
}

TEST(ComputeModuleSizes, EveryLibTorchScalarTypeHasASize) {
  for (int i = 0; i < static_cast<int>(c10::ScalarType::NumOptions); ++i) {
    const auto type = static_cast<c10::ScalarType>(i);
    if (type == c10::ScalarType::Undefined) continue;
    const ElementType element = ElementType::of(type);
    EXPECT_GT(element.bits(), 0) << c10::toString(type);
    if (element.dtype()) {
      EXPECT_EQ(element.bits(), element_bits(*element.dtype())) << c10::toString(type);
    } else if (!c10::isQIntType(type)) {
      // Complex types: as many bits as LibTorch stores per element.
      EXPECT_EQ(element.bits(), static_cast<int>(c10::elementSize(type)) * 8)
          << c10::toString(type);
    }
  }
  EXPECT_EQ(ElementType::of(at::kQUInt4x2).bits(), 4);  // two elements per byte
  EXPECT_THROW((void)ElementType::of(c10::ScalarType::Undefined), InvalidArgument);
}

TEST(ComputeModuleSizes, SubByteSizesAreExactBits) {
  Holder model;
  for (int i = 0; i < 8; ++i) {
    auto child = model.add(std::to_string(i), std::make_shared<Holder>());
    child->register_buffer("mask", at::zeros({3}, at::kBool));
  }
  const ModuleSizes sizes = compute_module_sizes(model);
  EXPECT_EQ(sizes.bits("0.mask"), 3U);
  EXPECT_EQ(sizes.bits(""), 24U);  // 8 × 0.375 bytes = exactly 3 bytes
  EXPECT_EQ(sizes.bytes(""), 3U);
  EXPECT_EQ(sizes.bytes("0"), 1U);  // reported rounded up
  EXPECT_NE(sizes.to_json().find("\"0.mask\": 0.375"), std::string::npos);
  EXPECT_EQ(ModuleSizes::from_json(sizes.to_json()).bits("0.mask"), 3U);
}

TEST(ComputeModuleSizes, TiedParametersCountOnce) {
  Holder model;
  auto a = model.add("a", std::make_shared<nn::Linear>(4, 4));
  auto b = model.add("b", std::make_shared<nn::Linear>(4, 4));
  testing::tie(model, "b.weight", "a.weight");
  const ModuleSizes sizes = compute_module_sizes(model);
  EXPECT_EQ(sizes.bytes(""), 64U + 16 + 16);
  EXPECT_FALSE(sizes.contains("b.weight"));
  EXPECT_EQ(sizes.bytes("b"), 16U);
}

TEST(ComputeModuleSizes, TotalBufferSize) {
  ModelForTest model;
  model.linear1->register_buffer("test_buffer", at::zeros({10, 10}));
  model.register_buffer("test_buffer2", at::zeros({20, 10}));
  const ModuleTree tree = ModuleTree::from_module(model);
  EXPECT_EQ(compute_module_total_buffer_bits(tree, ModuleTree::root(), {}) / 8, 1240U);
  EXPECT_EQ(compute_module_total_buffer_bits(tree, ModuleTree::root(), {.dtype = DType::kF16}) / 8,
            624U);
}

TEST(MaxLayerSize, LeavesAndNoSplitBlocks) {
  Holder model;
  model.add("0", std::make_shared<ModelForTest>());
  model.add("1", std::make_shared<ModelForTest>());
  const MaximumSizes plain = calculate_maximum_sizes(ModuleTree::from_module(model));
  EXPECT_EQ(plain.total_bits / 8, 472U);
  EXPECT_EQ(plain.largest_layer.size_bits / 8, 100U);
  EXPECT_EQ(plain.largest_layer.names, (std::vector<std::string>{"0.linear2", "1.linear2"}));
  const MaximumSizes blocks =
      calculate_maximum_sizes(ModuleTree::from_module(model), {.module_classes = {"ModelForTest"}});
  EXPECT_EQ(blocks.largest_layer.size_bits / 8, 236U);
  EXPECT_EQ(blocks.largest_layer.names, (std::vector<std::string>{"0", "1"}));
  // A top-level tensor is a layer of its own.
  model.register_parameter("scale", at::zeros({100}));
  EXPECT_EQ(calculate_maximum_sizes(ModuleTree::from_module(model)).largest_layer.names,
            (std::vector<std::string>{"scale"}));
}

TEST(ModuleTreeFromTensors, DottedNamesNaturalOrder) {
  const std::vector<TensorInfo> infos{
      {"lm_head.weight", DType::kF16, {10, 4}},
      {"model.layers.10.w", DType::kF16, {4}},
      {"model.layers.2.w", DType::kF16, {4}},
      {"model.norm.weight", DType::kF16, {4}},
      {"model.embed_tokens.weight", DType::kF16, {10, 4}},
  };
  const ModuleTree tree = ModuleTree::from_tensors(infos);
  std::vector<std::string> modules;
  for (const TreeNode& n : tree.nodes()) {
    if (n.is_module()) modules.push_back(n.name);
  }
  EXPECT_EQ(modules, (std::vector<std::string>{"", "model", "model.embed_tokens", "model.layers",
                                               "model.layers.2", "model.layers.10", "model.norm",
                                               "lm_head"}));
  EXPECT_EQ(compute_module_sizes(tree).bytes("model"), 80U + 8 + 8 + 8);
  EXPECT_EQ(infer_no_split_patterns(tree), (std::vector<std::string>{"model.layers.*"}));
}

TEST(ModuleTreeFromTensors, RejectsBadNames) {
  const auto build = [](std::vector<TensorInfo> infos) { ModuleTree::from_tensors(infos); };
  EXPECT_THROW(build({{"a.b", DType::kF32, {1}}, {"a.b", DType::kF32, {1}}}), InvalidArgument);
  EXPECT_THROW(build({{"a.b", DType::kF32, {1}}, {"a.b.c", DType::kF32, {1}}}), InvalidArgument);
  EXPECT_THROW(build({{"a..b", DType::kF32, {1}}}), InvalidArgument);
  try {
    build({{"a.b.c", DType::kF32, {1}}, {"a.b", DType::kF32, {1}}});
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_STREQ(e.what(), "checkpoint tensor 'a.b' is also the module prefix of other tensors");
  }
}

TEST(NoSplitPatterns, GlobsMatchWholeComponents) {
  EXPECT_TRUE(matches_module_pattern("model.layers.*", "model.layers.12"));
  EXPECT_FALSE(matches_module_pattern("model.layers.*", "model.layers.12.mlp"));
  EXPECT_FALSE(matches_module_pattern("model.layers.*", "model.layers"));
  EXPECT_TRUE(matches_module_pattern("h.*", "h.0"));
  EXPECT_TRUE(matches_module_pattern("*.experts.*", "mlp.experts.3"));
  EXPECT_TRUE(matches_module_pattern("block_*", "block_12"));
}

}  // namespace
}  // namespace ferry::plan
