// Sharded checkpoints: the splitting writer and its index, lazy shards, conflicts between the
// index and the shards, and folder resolution (spec §2.18, §3.2).
#include "ferry/io/sharded.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ferry/core/error.h"
#include "ferry/io/checkpoint.h"
#include "ferry/io/safetensors_writer.h"
#include "io_test_util.h"

namespace ferry::io {
namespace {

using testing::catch_error;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::ScratchDir;

// Four float tensors of 16, 16, 40 and 8 bytes, in state-dict order.
std::vector<std::pair<std::string, at::Tensor>> state_dict() {
  return {{"embed.weight", at::arange(4, at::kFloat)},
          {"layers.0.weight", at::arange(4, at::kFloat) + 10},
          {"layers.1.weight", at::arange(10, at::kFloat) + 20},
          {"norm.weight", at::ones({2})}};
}

TEST(ShardedWrite, SplitsGreedilyAndWritesAccelerateIndex) {
  ScratchDir dir;
  const auto index = save_sharded(dir.path(), state_dict(), {.max_shard_size = Bytes(32)});
  EXPECT_EQ(index, dir / "model.safetensors.index.json");
  // 16+16 fill shard 1; 40 > 32 gets shard 2 alone; 8 starts shard 3.
  EXPECT_EQ(testing::read_file(index),
            "{\n"
            "  \"metadata\": {\n"
            "    \"total_size\": 80\n"
            "  },\n"
            "  \"weight_map\": {\n"
            "    \"embed.weight\": \"model-00001-of-00003.safetensors\",\n"
            "    \"layers.0.weight\": \"model-00001-of-00003.safetensors\",\n"
            "    \"layers.1.weight\": \"model-00002-of-00003.safetensors\",\n"
            "    \"norm.weight\": \"model-00003-of-00003.safetensors\"\n"
            "  }\n"
            "}\n");
}

TEST(ShardedWrite, OneShardIsAPlainFile) {
  ScratchDir dir;
  EXPECT_EQ(save_sharded(dir.path(), state_dict()), dir / "model.safetensors");
  EXPECT_FALSE(std::filesystem::exists(dir / "model.safetensors.index.json"));
}

TEST(ShardedRead, RoundTripOpensShardsLazily) {
  ScratchDir dir;
  save_sharded(dir.path(), state_dict(), {.max_shard_size = Bytes(32)});
  const auto ckpt = ShardedCheckpoint::open(dir / "model.safetensors.index.json");
  EXPECT_THAT(ckpt->shard_files(),
              ElementsAre("model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                          "model-00003-of-00003.safetensors"));
  EXPECT_EQ(ckpt->total_size_bytes(), 80u);
  for (const auto& [name, tensor] : state_dict()) {
    EXPECT_TRUE(at::equal(ckpt->load(name), tensor)) << name;
  }
  EXPECT_EQ(ckpt->file_of("norm.weight"), dir / "model-00003-of-00003.safetensors");
  EXPECT_EQ(ckpt->total_bytes(), 80u);
  ckpt->validate();
}

TEST(ShardedRead, MissingShard) {
  ScratchDir dir;
  save_sharded(dir.path(), state_dict(), {.max_shard_size = Bytes(32)});
  std::filesystem::remove(dir / "model-00002-of-00003.safetensors");
  const auto e = catch_error<CorruptFile>(
      [&] { ShardedCheckpoint::open(dir / "model.safetensors.index.json"); });
  ASSERT_TRUE(e);
  EXPECT_THAT(e->what(), HasSubstr("model-00002-of-00003.safetensors"));
  EXPECT_THAT(e->what(), HasSubstr("model.safetensors.index.json"));
  EXPECT_EQ(e->path(), "layers.1.weight");
}

TEST(ShardedRead, IndexEntryAbsentFromItsShard) {
  ScratchDir dir;
  save_safetensors(dir / "a.safetensors", {{"x", at::ones({1})}});
  testing::write_file(dir / "m.index.json",
                      R"({"weight_map": {"x": "a.safetensors", "y": "a.safetensors"}})");
  const auto ckpt = ShardedCheckpoint::open(dir / "m.index.json");
  const auto e = catch_error<CorruptFile>([&] { ckpt->load("x"); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->path(), "y");
  EXPECT_THAT(e->what(), HasSubstr("a.safetensors"));
  EXPECT_THAT(e->what(), HasSubstr("m.index.json"));
}

TEST(ShardedRead, TensorInTwoShardsNamesBoth) {
  ScratchDir dir;
  save_safetensors(dir / "a.safetensors", {{"x", at::ones({1})}});
  save_safetensors(dir / "b.safetensors", {{"x", at::zeros({1})}, {"y", at::ones({1})}});
  testing::write_file(dir / "m.index.json",
                      R"({"weight_map": {"x": "a.safetensors", "y": "b.safetensors"}})");
  const auto ckpt = ShardedCheckpoint::open(dir / "m.index.json");
  const auto e = catch_error<CorruptFile>([&] { ckpt->validate(); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->path(), "x");
  EXPECT_THAT(e->what(), HasSubstr("a.safetensors"));
  EXPECT_THAT(e->what(), HasSubstr("b.safetensors"));
}

TEST(ShardedRead, NameListedTwiceInIndex) {
  ScratchDir dir;
  save_safetensors(dir / "a.safetensors", {{"x", at::ones({1})}});
  testing::write_file(dir / "m.index.json",
                      R"({"weight_map": {"x": "a.safetensors", "x": "b.safetensors"}})");
  const auto e = catch_error<CorruptFile>([&] { ShardedCheckpoint::open(dir / "m.index.json"); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->path(), "x");
  EXPECT_THAT(e->what(), HasSubstr("m.index.json"));
}

TEST(ShardedRead, ShardOutsideTheFolderIsRefused) {
  ScratchDir dir;
  testing::write_file(dir / "m.index.json", R"({"weight_map": {"x": "../a.safetensors"}})");
  const auto e = catch_error<CorruptFile>([&] { ShardedCheckpoint::open(dir / "m.index.json"); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->path(), "x");
}

TEST(ShardedRead, ShardNamesEscapingTheFolderAreRefused) {
  ScratchDir dir;
  for (const std::string shard : {"/etc/passwd", "a/../../b.safetensors", ""}) {
    SCOPED_TRACE(shard);
    testing::write_file(dir / "m.index.json",
                        fmt::format(R"({{"weight_map": {{"x": "{}"}}}})", shard));
    const auto e = catch_error<CorruptFile>([&] { ShardedCheckpoint::open(dir / "m.index.json"); });
    ASSERT_TRUE(e);
    EXPECT_EQ(e->path(), "x");
    EXPECT_THAT(e->what(), HasSubstr("relative path"));
  }
}

TEST(ShardedRead, ShardsLinkedAsInTheHuggingFaceCacheLoad) {
  // snapshots/<rev>/<file> -> ../../blobs/<hash>: symlinks out of the index's folder are the
  // cache's layout, so shards (unlike offload files) follow them; their names stay confined.
  ScratchDir dir;
  const auto snapshot = dir / "snapshots" / "rev";
  std::filesystem::create_directories(snapshot);
  std::filesystem::create_directories(dir / "blobs");
  const auto index = save_sharded(dir / "blobs", state_dict(), {.max_shard_size = Bytes(40)});
  for (const auto& entry : std::filesystem::directory_iterator(dir / "blobs")) {
    std::filesystem::create_symlink(
        std::filesystem::path("../../blobs") / entry.path().filename(),
        snapshot / entry.path().filename());
  }
  const auto sharded = ShardedCheckpoint::open(snapshot / index.filename());
  for (const auto& [name, tensor] : state_dict()) {
    EXPECT_TRUE(at::equal(sharded->load(name), tensor)) << name;
  }
}

TEST(ShardedRead, FlatMapWithoutWeightMap) {
  ScratchDir dir;
  save_safetensors(dir / "first.safetensors", {{"linear1.weight", at::ones({2})}});
  testing::write_file(dir / "m.index.json", R"({"linear1.weight": "first.safetensors"})");
  EXPECT_THAT(ShardedCheckpoint::open(dir / "m.index.json")->names(),
              ElementsAre("linear1.weight"));
}

TEST(ShardedRead, IndexNotJson) {
  ScratchDir dir;
  testing::write_file(dir / "m.index.json", "{\"weight_map\": ");
  const auto e = catch_error<CorruptFile>([&] { ShardedCheckpoint::open(dir / "m.index.json"); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->file(), (dir / "m.index.json").string());
}

TEST(CheckpointResolution, FolderFileAndIndex) {
  ScratchDir dir;
  std::filesystem::create_directories(dir / "single");
  std::filesystem::create_directories(dir / "sharded");
  save_sharded(dir / "single", state_dict());
  save_sharded(dir / "sharded", state_dict(), {.max_shard_size = Bytes(32)});
  EXPECT_EQ(resolve_checkpoint(dir / "single").path, dir / "single" / "model.safetensors");
  const auto sharded = resolve_checkpoint(dir / "sharded");
  EXPECT_EQ(sharded.kind, CheckpointKind::kShardedIndex);
  EXPECT_EQ(sharded.path, dir / "sharded" / "model.safetensors.index.json");
  EXPECT_EQ(resolve_checkpoint(sharded.path).kind, CheckpointKind::kShardedIndex);
  EXPECT_EQ(open_checkpoint(dir / "sharded")->names().size(), 4u);
  EXPECT_EQ(open_checkpoint(dir / "single" / "model.safetensors")->names().size(), 4u);
}

TEST(CheckpointResolution, AccelerateErrors) {
  ScratchDir dir;
  auto e = catch_error<InvalidArgument>([&] { resolve_checkpoint(dir.path()); });
  ASSERT_TRUE(e);
  EXPECT_THAT(e->what(), HasSubstr("is not a folder containing a `.index.json` file"));
  testing::write_file(dir / "a.index.json", "{}");
  testing::write_file(dir / "b.index.json", "{}");
  e = catch_error<InvalidArgument>([&] { resolve_checkpoint(dir.path()); });
  ASSERT_TRUE(e);
  EXPECT_THAT(e->what(), HasSubstr("containing more than one `.index.json` file"));
  e = catch_error<InvalidArgument>([&] { resolve_checkpoint(dir / "nothing"); });
  ASSERT_TRUE(e);
  EXPECT_THAT(e->what(), HasSubstr("`checkpoint` should be the path to a file"));
  testing::write_file(dir / "pytorch_model.bin", "x");
  EXPECT_THROW(resolve_checkpoint(dir / "pytorch_model.bin"), Unsupported);
}

}  // namespace
}  // namespace ferry::io
