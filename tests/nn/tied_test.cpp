#include "ferry/nn/tied.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "ferry/core/error.h"
#include "ferry/nn/containers.h"
#include "ferry/nn/embedding.h"
#include "ferry/nn/init.h"
#include "ferry/nn/linear.h"

namespace ferry::nn {
namespace {

// Two Linear modules sharing weight and bias.
std::shared_ptr<Sequential> tied_pair() {
  auto seq = std::make_shared<Sequential>();
  auto a = seq->push_back(std::make_shared<Linear>(3, 3));
  auto b = seq->push_back(std::make_shared<Linear>(3, 3));
  seq->set_slot("1.weight", a->find_entry("weight")->slot);
  seq->set_slot("1.bias", a->find_entry("bias")->slot);
  return seq;
}

TEST(Tied, FindGroupsSortedInFirstSeenOrder) {
  auto seq = tied_pair();
  EXPECT_EQ(find_tied_parameters(*seq), (std::vector<std::vector<std::string>>{
                                            {"0.weight", "1.weight"}, {"0.bias", "1.bias"}}));
}

TEST(Tied, ListedOnceUnderFirstName) {
  auto seq = tied_pair();
  std::vector<std::string> names;
  for (const auto& p : seq->named_parameters()) names.push_back(p.name);
  EXPECT_EQ(names, (std::vector<std::string>{"0.weight", "0.bias"}));
  EXPECT_EQ(seq->named_parameters({.remove_duplicate = false}).size(), 4U);
  EXPECT_EQ(seq->state_dict().size(), 2U);
  EXPECT_EQ(seq->state_dict({.keep_tied = true}).size(), 4U);
}

TEST(Tied, OneSlotSoAWriteIsSeenByAllNames) {
  auto seq = tied_pair();
  seq->set_tensor("0.weight", at::eye(3));
  EXPECT_TRUE(at::equal(seq->find_tensor("1.weight").tensor(), at::eye(3)));
  seq->set_tensor("1.bias", at::zeros({3}));
  const at::Tensor x = at::randn({2, 3});
  EXPECT_TRUE(at::allclose(seq->operator()(x), x));  // both layers are identity now
}

TEST(Tied, EmbeddingAndHeadTiedThroughRegisterTiedParameter) {
  auto root = std::make_shared<ModuleDict>();
  auto wte = root->insert("wte", std::make_shared<Embedding>(10, 4));
  auto head =
      root->insert("lm_head", std::make_shared<Linear>(4, 10, LinearOptions{.bias = false}));
  head->set_slot("weight", wte->weight_slot());
  EXPECT_EQ(find_tied_parameters(*root),
            (std::vector<std::vector<std::string>>{{"lm_head.weight", "wte.weight"}}));
  // The Linear's forward reads the tied slot.
  const at::Tensor x = at::randn({1, 4});
  // The fused float32 kernel sums in another order than BLAS (Note [float32 weights]).
  EXPECT_TRUE(at::allclose((*head)(x), at::matmul(x, wte->weight().t()), 1e-5, 1e-6));
}

TEST(Tied, NoTiesNoGroups) {
  Sequential seq;
  seq.push_back(std::make_shared<Linear>(2, 2));
  EXPECT_TRUE(find_tied_parameters(seq).empty());
}

TEST(Tied, RetieUsesFirstMemberNotOnMeta) {
  auto seq = std::make_shared<Sequential>();
  std::shared_ptr<Linear> a;
  std::shared_ptr<Linear> b;
  {
    InitEmptyWeights guard;
    a = seq->push_back(std::make_shared<Linear>(2, 2, LinearOptions{.bias = false}));
    b = seq->push_back(std::make_shared<Linear>(2, 2, LinearOptions{.bias = false}));
  }
  // Untied: "0.weight" stays on meta, "1.weight" was materialized.
  seq->set_tensor("1.weight", at::eye(2));
  retie_parameters(*seq, {{"0.weight", "1.weight"}});
  EXPECT_EQ(seq->find_tensor("0.weight").slot(), seq->find_tensor("1.weight").slot());
  EXPECT_TRUE(at::equal(a->weight(), at::eye(2)));
}

TEST(Tied, RetieAllOnMetaDoesNothing) {
  auto seq = std::make_shared<Sequential>();
  {
    InitEmptyWeights guard;
    seq->push_back(std::make_shared<Linear>(2, 2));
    seq->push_back(std::make_shared<Linear>(2, 2));
  }
  retie_parameters(*seq, {{"0.weight", "1.weight"}});
  EXPECT_NE(seq->find_tensor("0.weight").slot(), seq->find_tensor("1.weight").slot());
}

TEST(Tied, RetieUnknownNameIsMissingTensor) {
  auto seq = tied_pair();
  EXPECT_THROW(retie_parameters(*seq, {{"0.weight", "7.weight"}}), MissingTensor);
}

TEST(Tied, SetSlotChecksShape) {
  auto seq = tied_pair();
  Linear other(2, 5);
  EXPECT_THROW(seq->set_slot("0.weight", other.find_entry("weight")->slot), ShapeMismatch);
}

// One Linear registered under two names, as Sequential(layer, layer) in PyTorch.
std::shared_ptr<Sequential> shared_layer_pair(std::shared_ptr<Linear> layer) {
  auto seq = std::make_shared<Sequential>();
  seq->push_back(layer);
  seq->push_back(layer);
  return seq;
}

std::vector<std::vector<std::string>> sorted_groups(std::vector<std::vector<std::string>> g) {
  std::sort(g.begin(), g.end());
  return g;
}

TEST(SharedModule, WalkedUnderEveryNameWithoutRemoveDuplicate) {
  auto seq = shared_layer_pair(std::make_shared<Linear>(3, 3));
  std::vector<std::string> all;
  for (const auto& p : seq->named_parameters({.remove_duplicate = false})) all.push_back(p.name);
  EXPECT_EQ(all, (std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias"}));
  std::vector<std::string> once;
  for (const auto& p : seq->named_parameters()) once.push_back(p.name);
  EXPECT_EQ(once, (std::vector<std::string>{"0.weight", "0.bias"}));
}

TEST(SharedModule, StateDictKeepTiedListsEveryName) {
  auto seq = shared_layer_pair(std::make_shared<Linear>(3, 3));
  std::vector<std::string> keys;
  for (const auto& [name, t] : seq->state_dict({.keep_tied = true})) keys.push_back(name);
  EXPECT_EQ(keys, (std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias"}));
  EXPECT_EQ(seq->state_dict().size(), 2U);
}

TEST(SharedModule, NamedModulesOnceOrUnderEveryName) {
  auto seq = shared_layer_pair(std::make_shared<Linear>(3, 3));
  std::vector<std::string> once;
  for (const auto& m : seq->named_modules()) once.push_back(m.name);
  EXPECT_EQ(once, (std::vector<std::string>{"", "0"}));
  std::vector<std::string> all;
  for (const auto& m : seq->named_modules({.remove_duplicate = false})) all.push_back(m.name);
  EXPECT_EQ(all, (std::vector<std::string>{"", "0", "1"}));
}

TEST(SharedModule, BuffersUnderEveryNameWithoutRemoveDuplicate) {
  auto inner = std::make_shared<ModuleDict>();
  inner->register_buffer("scale", at::ones({2}));
  auto outer = std::make_shared<ModuleDict>();
  outer->insert("a", inner);
  outer->insert("b", inner);
  EXPECT_EQ(outer->named_buffers().size(), 1U);
  ASSERT_EQ(outer->named_buffers({.remove_duplicate = false}).size(), 2U);
  EXPECT_EQ(outer->named_buffers({.remove_duplicate = false})[1].name, "b.scale");
}

TEST(SharedModule, FindTiedParametersGroupsEveryName) {
  auto seq = shared_layer_pair(std::make_shared<Linear>(3, 3));
  EXPECT_EQ(
      sorted_groups(find_tied_parameters(*seq)),
      (std::vector<std::vector<std::string>>{{"0.bias", "1.bias"}, {"0.weight", "1.weight"}}));
}

TEST(SharedModule, NestedReuseListsEveryPath) {
  // A block reused inside a block that is itself reused: four paths to one Linear.
  auto layer = std::make_shared<Linear>(2, 2, LinearOptions{.bias = false});
  auto block = shared_layer_pair(layer);
  auto model = std::make_shared<Sequential>();
  model->push_back(block);
  model->push_back(block);
  std::vector<std::string> all;
  for (const auto& p : model->named_parameters({.remove_duplicate = false})) {
    all.push_back(p.name);
  }
  EXPECT_EQ(all,
            (std::vector<std::string>{"0.0.weight", "0.1.weight", "1.0.weight", "1.1.weight"}));
  ASSERT_EQ(find_tied_parameters(*model).size(), 1U);
  EXPECT_EQ(find_tied_parameters(*model)[0].size(), 4U);
}

TEST(SharedModule, CycleIsAnErrorNotAnEndlessWalk) {
  auto outer = std::make_shared<ModuleDict>();
  auto inner = outer->insert("inner", std::make_shared<ModuleDict>());
  inner->register_parameter("w", at::ones({1}));
  // outer → inner → outer; the back edge does not own outer, so the test leaks nothing.
  inner->insert("back", std::shared_ptr<ModuleDict>(outer.get(), [](ModuleDict*) {}));
  try {
    (void)outer->named_parameters({.remove_duplicate = false});
    ADD_FAILURE() << "no error for a cycle";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("'inner.back'"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)outer->state_dict({.keep_tied = true}), InvalidArgument);
  EXPECT_THROW((void)outer->named_modules(), InvalidArgument);  // once per module: still a cycle
}

}  // namespace
}  // namespace ferry::nn
