// TensorSource: the same questions answered by every backing store, and prefix views whose
// names and sizes agree with their parent.
#include "ferry/io/tensor_source.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ferry/core/error.h"
#include "ferry/io/checkpoint.h"
#include "ferry/io/offload_folder.h"
#include "ferry/io/safetensors_writer.h"
#include "ferry/io/sharded.h"
#include "io_test_util.h"

namespace ferry::io {
namespace {

using testing::catch_error;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::ScratchDir;

std::vector<std::pair<std::string, at::Tensor>> tiny_model() {
  return {{"model.embed.weight", at::arange(12, at::kFloat).reshape({4, 3})},
          {"model.layers.3.mlp.up.weight", at::ones({2, 3}, at::kHalf)},
          {"model.layers.3.mlp.up.bias", at::zeros({2}, at::kHalf)},
          {"model.layers.30.norm.weight", at::ones({3}, at::kBFloat16)},
          {"model.layers.3.step", at::scalar_tensor(5, at::kLong)}};
}

// The same model in each kind of store.
std::vector<std::shared_ptr<const TensorSource>> every_store(const ScratchDir& dir) {
  const auto tensors = tiny_model();
  std::filesystem::create_directories(dir / "single");
  std::filesystem::create_directories(dir / "sharded");
  save_sharded(dir / "single", tensors);
  save_sharded(dir / "sharded", tensors, {.max_shard_size = Bytes(20)});
  offload_state_dict(dir / "offload", tensors);
  return {make_memory_source({tensors.begin(), tensors.end()}), open_checkpoint(dir / "single"),
          open_checkpoint(dir / "sharded"), open_checkpoint(dir / "offload")};
}

TEST(TensorSource, EveryStoreAnswersAlike) {
  ScratchDir dir;
  for (const auto& source : every_store(dir)) {
    SCOPED_TRACE(source->description());
    EXPECT_EQ(source->names().size(), 5u);
    EXPECT_TRUE(std::is_sorted(source->names().begin(), source->names().end()));
    EXPECT_EQ(source->total_bytes(), 48u + 12u + 4u + 6u + 8u);
    const TensorInfo info = source->info("model.layers.3.mlp.up.weight");
    EXPECT_EQ(info.dtype, DType::kF16);
    EXPECT_THAT(info.shape, ElementsAre(2, 3));
    const at::Tensor f32 = source->load("model.layers.3.mlp.up.weight", {.dtype = DType::kF32});
    EXPECT_EQ(f32.scalar_type(), at::kFloat);
    EXPECT_TRUE(at::equal(f32, at::ones({2, 3})));
    EXPECT_EQ(source->load("model.layers.3.step").dim(), 0);
    const auto e = catch_error<MissingTensor>([&] { source->load("model.nope"); });
    ASSERT_TRUE(e);
    EXPECT_EQ(e->path(), "model.nope");
    EXPECT_THAT(e->what(), HasSubstr(source->description()));
  }
}

TEST(TensorSource, PrefixViewNamesAndSizesAgree) {
  ScratchDir dir;
  for (const auto& source : every_store(dir)) {
    SCOPED_TRACE(source->description());
    const auto layer = source->prefixed("model.layers.3.");
    // "model.layers.30." does not belong to layer 3.
    EXPECT_THAT(layer->names(), ElementsAre("mlp.up.bias", "mlp.up.weight", "step"));
    EXPECT_EQ(layer->total_bytes(), 4u + 12u + 8u);
    EXPECT_EQ(layer->info("mlp.up.weight").name, "mlp.up.weight");
    EXPECT_TRUE(
        at::equal(layer->load("mlp.up.weight"), source->load("model.layers.3.mlp.up.weight")));
    EXPECT_EQ(layer->file_of("step"), source->file_of("model.layers.3.step"));
    const auto mlp = layer->prefixed("mlp.");
    EXPECT_THAT(mlp->names(), ElementsAre("up.bias", "up.weight"));
    EXPECT_FALSE(mlp->contains("step"));
    EXPECT_THROW(mlp->load("step"), MissingTensor);
    EXPECT_TRUE(source->prefixed("nothing.")->names().empty());
  }
}

TEST(TensorSource, PrefixViewOutlivesItsParentHandle) {
  auto source = make_memory_source({{"a.x", at::ones({1})}});
  const auto view = source->prefixed("a.");
  source.reset();
  EXPECT_TRUE(at::equal(view->load("x"), at::ones({1})));
}

TEST(TensorSource, MemorySourceReturnsItsTensorUnlessAskedToConvert) {
  const at::Tensor t = at::ones({2});
  const auto source = make_memory_source({{"t", t}});
  EXPECT_TRUE(source->load("t").is_same(t));
  EXPECT_FALSE(source->load("t", {.copy = true}).is_same(t));
  EXPECT_EQ(source->file_of("t"), std::filesystem::path());
}

}  // namespace
}  // namespace ferry::io
