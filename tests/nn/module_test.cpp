#include <gtest/gtest.h>

#include "ferry/core/error.h"
#include "ferry/nn/containers.h"
#include "ferry/nn/linear.h"
#include "test_models.h"

namespace ferry::nn {
namespace {

using testing::ModelForTest;

std::vector<std::string> names_of(const std::vector<NamedTensor>& v) {
  std::vector<std::string> out;
  for (const auto& t : v) out.push_back(t.name);
  return out;
}

TEST(ModuleTree, NamedParametersUseFullDottedNamesInOrder) {
  ModelForTest m;
  EXPECT_EQ(names_of(m.named_parameters()),
            (std::vector<std::string>{"linear1.weight", "linear1.bias", "batchnorm.weight",
                                      "batchnorm.bias", "linear2.weight", "linear2.bias"}));
  EXPECT_TRUE(m.named_parameters({.recurse = false}).empty());
}

TEST(ModuleTree, NamedBuffersAndPersistence) {
  ModelForTest m;
  EXPECT_EQ(names_of(m.named_buffers()),
            (std::vector<std::string>{"batchnorm.running_mean", "batchnorm.running_var",
                                      "batchnorm.num_batches_tracked"}));
  m.linear1->register_buffer("scratch", at::zeros({2}), /*persistent=*/false);
  EXPECT_EQ(m.named_buffers().size(), 4U);
  EXPECT_EQ(m.named_buffers({.persistent_only = true}).size(), 3U);
}

TEST(ModuleTree, NamedModulesPreOrderWithRoot) {
  ModelForTest m;
  std::vector<std::string> names;
  std::vector<std::string> classes;
  for (const auto& nm : m.named_modules()) {
    names.push_back(nm.name);
    classes.push_back(nm.module->class_name());
  }
  EXPECT_EQ(names, (std::vector<std::string>{"", "linear1", "batchnorm", "linear2"}));
  EXPECT_EQ(classes, (std::vector<std::string>{"ModelForTest", "Linear", "BatchNorm1d", "Linear"}));
}

TEST(ModuleTree, DeepTreeNames) {
  Sequential outer;
  auto inner = outer.push_back(std::make_shared<Sequential>());
  inner->push_back(std::make_shared<Linear>(2, 2));
  inner->push_back(std::make_shared<Linear>(2, 2, LinearOptions{.bias = false}));
  EXPECT_EQ(names_of(outer.named_parameters()),
            (std::vector<std::string>{"0.0.weight", "0.0.bias", "0.1.weight"}));
  EXPECT_EQ(&outer.submodule("0.1"), inner->child("1"));
  EXPECT_EQ(outer.find_tensor("0.1.weight").owner, inner->child("1"));
}

TEST(ModuleTree, StateDictOrderIsPyTorchs) {
  ModelForTest m;
  m.batchnorm->register_buffer("hidden", at::zeros({1}), /*persistent=*/false);
  std::vector<std::string> keys;
  for (const auto& [k, v] : m.state_dict()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{
                      "linear1.weight", "linear1.bias", "batchnorm.weight", "batchnorm.bias",
                      "batchnorm.running_mean", "batchnorm.running_var",
                      "batchnorm.num_batches_tracked", "linear2.weight", "linear2.bias"}));
}

TEST(ModuleTree, NamedModuleTensorsParamsThenBuffersWithFullNameFiltering) {
  // Spec §2.3 QUIRK: a root persistent "mask" and a child non-persistent "mask". ferry compares
  // full names, so the root's persistent buffer stays and the child's is dropped.
  ModelForTest m;
  m.register_buffer("mask", at::zeros({1}), /*persistent=*/true);
  m.linear1->register_buffer("mask", at::zeros({1}), /*persistent=*/false);
  auto all = names_of(m.named_module_tensors(true, true, false));
  auto filtered = names_of(m.named_module_tensors(true, true, true));
  EXPECT_EQ(all.front(), "linear1.weight");
  EXPECT_EQ(all[6], "mask");  // buffers come after every parameter
  EXPECT_NE(std::find(all.begin(), all.end(), "linear1.mask"), all.end());
  EXPECT_NE(std::find(filtered.begin(), filtered.end(), "mask"), filtered.end());
  EXPECT_EQ(std::find(filtered.begin(), filtered.end(), "linear1.mask"), filtered.end());
  EXPECT_EQ(names_of(m.named_module_tensors(false, true, false)).size(), 6U);
  EXPECT_EQ(names_of(m.named_module_tensors(true, false, false)),
            (std::vector<std::string>{"mask"}));
}

TEST(ModuleTree, RejectsBadAndDuplicateNames) {
  Linear lin(2, 2);
  EXPECT_THROW(lin.register_buffer("weight", at::zeros({1})), InvalidArgument);
  EXPECT_THROW(lin.register_buffer("a.b", at::zeros({1})), InvalidArgument);
  EXPECT_THROW(lin.register_buffer("", at::zeros({1})), InvalidArgument);
  EXPECT_THROW(lin.register_module("bias", std::make_shared<Linear>(1, 1)), InvalidArgument);
  EXPECT_THROW(lin.register_parameter("u", at::Tensor()), InvalidArgument);
}

TEST(ModuleTree, MissingPathsAreTypedErrors) {
  ModelForTest m;
  try {
    m.find_tensor("linear3.weight");
    FAIL();
  } catch (const MissingTensor& e) {
    EXPECT_EQ(e.path(), "linear3.weight");
    EXPECT_NE(std::string(e.what()).find("'linear3.weight'"), std::string::npos);
  }
  EXPECT_THROW(m.find_tensor("linear1.gamma"), MissingTensor);
  EXPECT_THROW(m.submodule("linear1.sub"), MissingTensor);
}

TEST(Slots, ReplacementIsSeenByTheNextCall) {
  Linear lin(3, 2);
  const at::Tensor x = at::randn({4, 3});
  const at::Tensor before = lin(x);
  lin.set_tensor("weight", at::zeros({2, 3}));
  lin.set_tensor("bias", at::ones({2}));
  EXPECT_TRUE(at::equal(lin(x), at::ones({4, 2})));
  EXPECT_FALSE(at::equal(before, lin(x)));
}

TEST(Slots, MoveBetweenMetaAndCpuKeepsShape) {
  Linear lin(3, 2);
  const at::Tensor w = lin.weight().clone();
  lin.set_tensor("weight", at::empty({2, 3}, at::TensorOptions().device(at::kMeta)));
  EXPECT_TRUE(lin.weight().is_meta());
  lin.set_tensor("weight", w.to(at::kDouble));  // dtype may change
  EXPECT_EQ(lin.weight().scalar_type(), at::kDouble);
  EXPECT_TRUE(at::equal(lin.weight(), w.to(at::kDouble)));
}

TEST(Slots, ShapeMismatchNamesPathExpectedActual) {
  ModelForTest m;
  try {
    m.set_tensor("linear1.weight", at::zeros({3, 4}));
    FAIL();
  } catch (const ShapeMismatch& e) {
    EXPECT_STREQ(e.what(), "tensor 'linear1.weight': expected shape [4, 3], got [3, 4]");
    EXPECT_EQ(e.expected(), "[4, 3]");
    EXPECT_EQ(e.actual(), "[3, 4]");
  }
  EXPECT_EQ(m.linear1->weight().sizes(), (std::vector<std::int64_t>{4, 3}));
}

TEST(Slots, RequiresGradIsKeptAcrossReplacement) {
  Linear lin(2, 2);
  lin.register_parameter("scale", at::ones({2}), /*requires_grad=*/true);
  EXPECT_TRUE(lin.find_tensor("scale").tensor().requires_grad());
  lin.set_tensor("scale", at::zeros({2}));
  EXPECT_TRUE(lin.find_tensor("scale").tensor().requires_grad());
  EXPECT_FALSE(lin.weight().requires_grad());  // inference default
}

// A hook that records the order of events and rewrites inputs and outputs.
class RecordingHook : public ModelHook {
 public:
  std::vector<std::string>* events;
  explicit RecordingHook(std::vector<std::string>* e) : events(e) {}
  void pre_forward(Module& m, TensorView& args) override {
    events->push_back("pre " + m.class_name() + " " + std::to_string(args.size()));
    for (auto& f : args.fields()) *f.tensor = *f.tensor * 2;
  }
  void post_forward(Module& m, TensorView& outputs) override {
    events->push_back("post " + m.class_name());
    for (auto& f : outputs.fields()) *f.tensor = *f.tensor + 1;
  }
  bool no_grad() const override { return true; }
};

TEST(Hooks, EveryCallRunsPreForwardPost) {
  std::vector<std::string> events;
  Linear lin(2, 2);
  lin.set_tensor("weight", at::eye(2));
  lin.set_tensor("bias", at::zeros({2}));
  lin.set_hook(std::make_shared<RecordingHook>(&events));
  const at::Tensor x = at::ones({1, 2});
  const at::Tensor y = lin(x);
  EXPECT_TRUE(at::equal(y, at::full({1, 2}, 3.0)));  // (x*2) @ I + 1
  EXPECT_TRUE(at::equal(x, at::ones({1, 2})));       // the caller's tensor is untouched
  EXPECT_EQ(events, (std::vector<std::string>{"pre Linear 1", "post Linear"}));
}

TEST(Hooks, NoGradHookDisablesAutograd) {
  std::vector<std::string> events;
  Linear lin(2, 2);
  lin.set_tensor("weight", at::ones({2, 2}).set_requires_grad(true));
  EXPECT_TRUE(lin(at::ones({1, 2})).requires_grad());
  lin.set_hook(std::make_shared<RecordingHook>(&events));
  EXPECT_FALSE(lin(at::ones({1, 2})).requires_grad());
}

TEST(Hooks, ContainersCallChildrenThroughTheirHooks) {
  std::vector<std::string> events;
  Sequential seq;
  auto a = seq.push_back(std::make_shared<Linear>(2, 2));
  auto b = seq.push_back(std::make_shared<Linear>(2, 2));
  b->set_hook(std::make_shared<RecordingHook>(&events));
  seq.set_hook(std::make_shared<RecordingHook>(&events));
  seq(at::ones({1, 2}));
  EXPECT_EQ(events, (std::vector<std::string>{"pre Sequential 1", "pre Linear 1", "post Linear",
                                              "post Sequential"}));
}

// A RecordingHook that allows grouped calls; with `scale_inputs` false it leaves tensors alone.
class GroupableHook : public RecordingHook {
 public:
  GroupableHook(std::vector<std::string>* e, bool scale_inputs)
      : RecordingHook(e), scale_inputs_(scale_inputs) {}
  void pre_forward(Module& m, TensorView& args) override {
    if (scale_inputs_) return RecordingHook::pre_forward(m, args);
    events->push_back("pre " + std::to_string(args.size()));
  }
  void post_forward(Module& m, TensorView& outputs) override {
    if (scale_inputs_) return RecordingHook::post_forward(m, outputs);
    events->push_back("post " + std::to_string(outputs.size()));
  }
  bool groupable() const override { return true; }
  bool no_grad() const override { return scale_inputs_; }  // as a layer without a hook

 private:
  bool scale_inputs_;
};

struct Projections {
  std::vector<std::shared_ptr<Linear>> owned;
  std::vector<Linear*> layers;
  Projections() {
    at::manual_seed(3);
    for (const std::int64_t out : {40, 8, 8}) {
      owned.push_back(std::make_shared<Linear>(64, out));
      layers.push_back(owned.back().get());
    }
  }
  std::vector<at::Tensor> one_by_one(const at::Tensor& x) {
    std::vector<at::Tensor> out;
    for (Linear* l : layers) out.push_back((*l)(x));
    return out;
  }
};

void expect_equal(const std::vector<at::Tensor>& got, const std::vector<at::Tensor>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(at::equal(got[i], want[i])) << "output " << i;
  }
}

// Note [Grouped calls]: every pre_forward, the products together, then every post_forward.
TEST(GroupedCalls, GroupableHooksRunAroundOneProductAndResultsEqualOneByOne) {
  Projections p;
  const at::Tensor x = at::randn({1, 1, 64});
  const std::vector<at::Tensor> want = p.one_by_one(x);
  expect_equal(Linear::call_group(p.layers, x), want);  // no hooks at all
  std::vector<std::string> events;
  for (std::size_t i = 1; i < p.layers.size(); ++i) {  // the first one has no hook
    p.layers[i]->set_hook(std::make_shared<GroupableHook>(&events, false));
  }
  expect_equal(Linear::call_group(p.layers, x), want);
  EXPECT_EQ(events, (std::vector<std::string>{"pre 1", "pre 1", "post 1", "post 1"}));
  events.clear();
  expect_equal(p.one_by_one(x), want);
  EXPECT_EQ(events, (std::vector<std::string>{"pre 1", "post 1", "pre 1", "post 1"}));
}

TEST(GroupedCalls, HooksThatChangeTheInputOrOutputsKeepTheirEffect) {
  // The hooks double each input (a new tensor per layer: the layers compute one by one) and add
  // 1 to each output; the results are those of ordinary calls through the same hooks.
  // RecordingHook asks for no_grad: weights that require grad give outputs that do not.
  Projections p;
  std::vector<std::string> events;
  for (Linear* l : p.layers) {
    l->set_tensor("weight", l->weight().detach().clone().set_requires_grad(true));
    l->set_hook(std::make_shared<GroupableHook>(&events, true));
  }
  const at::Tensor x = at::randn({2, 64});
  const std::vector<at::Tensor> want = p.one_by_one(x);
  events.clear();
  const std::vector<at::Tensor> got = Linear::call_group(p.layers, x);
  expect_equal(got, want);
  for (const at::Tensor& y : got) EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(events, (std::vector<std::string>{"pre Linear 1", "pre Linear 1", "pre Linear 1",
                                              "post Linear", "post Linear", "post Linear"}));
}

TEST(GroupedCalls, OneHookThatIsNotGroupableSendsTheGroupOneByOne) {
  Projections p;
  std::vector<std::string> events;
  p.layers[0]->set_hook(std::make_shared<GroupableHook>(&events, false));
  p.layers[1]->set_hook(std::make_shared<RecordingHook>(&events));
  const at::Tensor x = at::randn({1, 64});
  Linear::call_group(p.layers, x);
  EXPECT_EQ(events, (std::vector<std::string>{"pre 1", "post 1", "pre Linear 1", "post Linear"}));
}

struct Batch {
  at::Tensor ids;
  std::optional<at::Tensor> mask;
  int step = 0;
  void visit_tensors(TensorView& view) {
    view.visit(ids, "ids");
    view.visit(mask, "mask");
  }
};

TEST(TensorView, VisitsNestedValuesWithKeys) {
  at::Tensor a = at::ones({1});
  std::vector<at::Tensor> list{at::ones({2}), at::Tensor(), at::ones({3})};
  std::tuple<at::Tensor, int, std::optional<at::Tensor>> tup{at::ones({4}), 7, std::nullopt};
  Batch batch{at::ones({5}), at::ones({6}), 1};
  TensorView view;
  view.visit(a);
  view.visit(list);
  view.visit(tup);
  view.visit(batch);
  std::vector<std::int64_t> sizes;
  std::vector<std::string> keys;
  for (const auto& f : view.fields()) {
    sizes.push_back(f.tensor->size(0));
    keys.emplace_back(f.key);
  }
  EXPECT_EQ(sizes, (std::vector<std::int64_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(keys, (std::vector<std::string>{"", "", "", "", "ids", "mask"}));
  *view.fields()[4].tensor = at::zeros({9});
  EXPECT_EQ(batch.ids.size(0), 9);
}

}  // namespace
}  // namespace ferry::nn
