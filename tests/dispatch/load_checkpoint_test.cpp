#include "ferry/dispatch/load_checkpoint.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>

#include "dispatch_test_models.h"
#include "ferry/core/devices.h"
#include "ferry/core/error.h"
#include "ferry/core/log.h"
#include "ferry/dispatch/dispatch_model.h"
#include "ferry/io/checkpoint.h"
#include "ferry/io/offload_folder.h"
#include "ferry/io/safetensors_writer.h"
#include "ferry/io/sharded.h"
#include "ferry/nn/containers.h"
#include "ferry/nn/init.h"
#include "ferry/nn/linear.h"
#include "ferry/plan/module_tree.h"
#include "ferry/plan/resolve.h"
#include "scratch_dir.h"

namespace ferry::dispatch {
namespace {

using testing::ModelForTest;
using testing::TinyStack;

using TempDir = ferry::testing::ScratchDir;

// A reference model with real weights saved to `dir` as a sharded checkpoint (tied head omitted,
// as Hugging Face checkpoints do).
std::filesystem::path save_reference(TinyStack& reference, const std::filesystem::path& dir) {
  return io::save_sharded(dir, reference.state_dict(),
                          io::ShardOptions{.max_shard_size = Bytes(2000)});
}

std::unique_ptr<TinyStack> empty_stack() {
  nn::InitEmptyWeights guard;
  return std::make_unique<TinyStack>(23, 8, 3);
}

TEST(LoadCheckpoint, WithoutMapLoadsZeroCopyOnCpu) {
  TempDir dir;
  at::manual_seed(1);
  TinyStack reference(23, 8, 3);
  const at::Tensor ids = at::randint(23, {2, 4});
  const at::Tensor expected = reference(ids);
  const auto checkpoint = save_reference(reference, dir.path());
  auto model = empty_stack();
  const LoadReport report = load_checkpoint_in_model(*model, dir.path());
  EXPECT_TRUE(report.unexpected_keys.empty());
  EXPECT_TRUE(report.missing_keys.empty()) << report.missing_keys.front();
  EXPECT_TRUE(at::equal((*model)(ids), expected));
  EXPECT_TRUE(model->embed->weight().is_cpu());
  // The tie survives: head reads the embedding's slot.
  EXPECT_EQ(model->find_tensor("head.weight").slot(), model->find_tensor("embed.weight").slot());
}

TEST(LoadCheckpoint, ProgressCountsEveryTensorAndByteOfEveryShard) {
  TempDir dir;
  TempDir offload;
  at::manual_seed(3);
  TinyStack reference(23, 8, 3);
  save_reference(reference, dir.path());
  std::set<std::filesystem::path> shards;
  std::uint64_t shard_tensor_bytes = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    if (e.path().extension() != ".safetensors") continue;
    shards.insert(e.path().filename());
    shard_tensor_bytes += io::open_checkpoint(e.path())->total_bytes();
  }
  ASSERT_GE(shards.size(), 2u);
  std::vector<LoadProgress> calls;
  std::set<std::filesystem::path> files;
  auto model = empty_stack();
  load_checkpoint_and_dispatch(
      *model, dir.path(),
      LoadAndDispatchOptions{.device_map = plan::DeviceMap{{"", Placement::cpu()}},
                             .offload_folder = offload.path(),
                             .progress = [&](const LoadProgress& p) {
                               calls.push_back(p);
                               files.insert(std::filesystem::path(p.current_file).filename());
                             }});
  const std::size_t n_tensors = reference.state_dict().size();
  ASSERT_EQ(calls.size(), n_tensors);
  for (std::size_t i = 0; i < calls.size(); ++i) {
    EXPECT_EQ(calls[i].tensors_done, i + 1);
    EXPECT_EQ(calls[i].tensors_total, n_tensors);
    EXPECT_EQ(calls[i].bytes_total, shard_tensor_bytes);
    if (i > 0) {
      EXPECT_GT(calls[i].bytes_done, calls[i - 1].bytes_done);
    }
  }
  EXPECT_EQ(calls.back().bytes_done, shard_tensor_bytes);
  EXPECT_EQ(files, shards);
}

TEST(LoadCheckpoint, AndDispatchWithAutoOnSimulatedGpuCpuAndDisk) {
  SimGpuScope gpus({3_KiB});
  TempDir dir;
  TempDir offload;
  at::manual_seed(2);
  TinyStack reference(23, 8, 3);
  const at::Tensor ids = at::randint(23, {2, 4});
  const at::Tensor expected = reference(ids);
  save_reference(reference, dir.path());
  auto model = empty_stack();
  plan::MemoryBudget budget;
  budget.set(Placement::gpu(0), 3_KiB);
  // 1500 bytes of weights beside the host staging the disk blocks stream through.
  const plan::Staging staging =
      plan::staging_for(plan::ModuleTree::from_module(*model),
                        plan::PlanOptions{.no_split_module_classes = {"Block"}},
                        runtime_of(LoadAndDispatchOptions{}));
  budget.set(Placement::cpu(), Bytes(1500 + staging.host_bytes));
  const plan::DeviceMap map =
      load_checkpoint_and_dispatch(*model, dir.path(),
                                   LoadAndDispatchOptions{.device_map = plan::Strategy::kSequential,
                                                          .max_memory = budget,
                                                          .no_split_module_classes = {"Block"},
                                                          .offload_folder = offload.path()});
  const auto placements = map.placements();
  EXPECT_NE(std::find(placements.begin(), placements.end(), Placement::disk()), placements.end())
      << map.to_json();
  EXPECT_TRUE(at::equal((*model)(ids), expected)) << map.to_json();
  EXPECT_LE(sim_gpu_stats(0).peak, 3_KiB);
  // Disk weights are read in place from the checkpoint: nothing is written to the folder.
  EXPECT_TRUE(std::filesystem::is_empty(offload.path()));
}

TEST(LoadCheckpoint, DtypeConversionWritesOffloadCopiesAndLeavesIntegersAlone) {
  TempDir dir;
  TempDir offload;
  ModelForTest reference;
  const auto state = reference.state_dict();
  io::save_safetensors(dir.path() / "model.safetensors",
                       std::map<std::string, at::Tensor>(state.begin(), state.end()));
  std::unique_ptr<ModelForTest> model;
  {
    nn::InitEmptyWeights guard;
    model = std::make_unique<ModelForTest>();
  }
  load_checkpoint_in_model(
      *model, dir.path() / "model.safetensors",
      LoadCheckpointOptions{.device_map = plan::DeviceMap{{"linear1", Placement::cpu()},
                                                          {"batchnorm", Placement::cpu()},
                                                          {"linear2", Placement::disk()}},
                            .offload_folder = offload.path(),
                            .dtype = DType::kF16});
  EXPECT_EQ(model->linear1->weight().scalar_type(), at::kHalf);
  EXPECT_EQ(model->batchnorm->find_tensor("num_batches_tracked").tensor().scalar_type(), at::kLong);
  EXPECT_TRUE(model->linear2->weight().is_meta());
  EXPECT_EQ(model->linear2->weight().scalar_type(), at::kHalf);
  EXPECT_TRUE(std::filesystem::exists(offload.path() / "linear2.weight.dat"));
  const auto folder = io::OffloadFolder::open(offload.path());
  EXPECT_EQ(folder->info("linear2.weight").dtype, DType::kF16);
}

TEST(LoadCheckpoint, ErrorsNameTensorFileAndShapes) {
  TempDir dir;
  io::save_safetensors(dir.path() / "model.safetensors",
                       {{"linear1.weight", at::zeros({3, 4})}, {"extra", at::zeros({1})}});
  ModelForTest model;
  try {
    load_checkpoint_in_model(model, dir.path());
    FAIL();
  } catch (const ShapeMismatch& e) {
    EXPECT_EQ(e.path(), "linear1.weight");
    EXPECT_NE(e.file().find("model.safetensors"), std::string::npos);
    EXPECT_EQ(e.expected(), "[4, 3]");
    EXPECT_EQ(e.actual(), "[3, 4]");
  }
}

// Accelerate asks for an offload_folder whenever the map has "disk"; ferry needs one only to
// write converted copies, and then makes a private temporary folder that lives as long as the
// model's hooks (docs/deviations.md).
TEST(LoadCheckpoint, DiskWithoutAFolderReadsInPlaceOrConvertsIntoAPrivateTemporaryFolder) {
  TempDir dir;
  TempDir tmp;
  ferry::testing::TmpDirScope scope(tmp.path());
  at::manual_seed(4);
  TinyStack reference(23, 8, 3);
  const at::Tensor ids = at::randint(23, {2, 4});
  save_reference(reference, dir.path());
  const plan::DeviceMap map{{"embed", Placement::cpu()},
                            {"layers", Placement::disk()},
                            {"norm", Placement::cpu()},
                            {"head", Placement::cpu()},
                            {"scale", Placement::cpu()}};
  {
    auto model = empty_stack();
    load_checkpoint_and_dispatch(*model, dir.path(), LoadAndDispatchOptions{.device_map = map});
    EXPECT_TRUE(at::equal((*model)(ids), reference(ids)));
    EXPECT_TRUE(std::filesystem::is_empty(tmp.path()));  // read in place: nothing written
  }
  {
    auto model = empty_stack();
    load_checkpoint_and_dispatch(*model, dir.path(),
                                 LoadAndDispatchOptions{.device_map = map, .dtype = DType::kBF16});
    ASSERT_FALSE(std::filesystem::is_empty(tmp.path()));  // converted copies, while it lives
    EXPECT_TRUE(at::allclose((*model)(ids).to(at::kFloat), reference(ids), 0.1, 0.1));
  }
  EXPECT_TRUE(std::filesystem::is_empty(tmp.path()));  // removed with the model
}

TEST(LoadCheckpoint, ConvertingIntoTheCheckpointsOwnFolderIsRefused) {
  TempDir dir;
  TinyStack reference(23, 8, 3);
  save_reference(reference, dir.path());
  std::map<std::filesystem::path, std::uintmax_t> before;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    before[e.path()] = std::filesystem::file_size(e.path());
  }
  auto model = empty_stack();
  try {
    load_checkpoint_in_model(
        *model, dir.path(),
        LoadCheckpointOptions{.device_map = plan::DeviceMap{{"", Placement::disk()}},
                              .offload_folder = dir.path() / ".",
                              .dtype = DType::kF16});
    FAIL() << "wrote into the checkpoint's folder";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("is the folder the checkpoint is read from"),
              std::string::npos)
        << e.what();
  }
  std::map<std::filesystem::path, std::uintmax_t> after;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    after[e.path()] = std::filesystem::file_size(e.path());
  }
  EXPECT_EQ(after, before);
}

TEST(LoadCheckpoint, ATensorflowSafetensorsFileIsRejected) {
  TempDir dir;
  io::save_safetensors(dir.path() / "model.safetensors", {{"linear1.weight", at::zeros({4, 3})}},
                       io::SaveOptions{.metadata = {{"format", "tf"}}});
  ModelForTest model;
  try {
    load_checkpoint_in_model(model, dir.path());
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(e.expected(), "pt");
    EXPECT_EQ(e.actual(), "tf");
  }
}

TEST(LoadCheckpoint, UnexpectedAndMissingKeysAreReportedOrStrictErrors) {
  TempDir dir;
  ModelForTest reference;
  auto state = reference.state_dict();
  std::map<std::string, at::Tensor> tensors(state.begin(), state.end());
  tensors.erase("linear2.bias");
  tensors.emplace("decoder.weight", at::zeros({2}));
  io::save_safetensors(dir.path() / "model.safetensors", tensors);
  ModelForTest model;
  LogCapture log;
  const LoadReport report = load_checkpoint_in_model(model, dir.path());
  EXPECT_EQ(report.unexpected_keys, std::vector<std::string>{"decoder.weight"});
  EXPECT_EQ(report.missing_keys, std::vector<std::string>{"linear2.bias"});
  EXPECT_TRUE(log.contains(LogLevel::kWarning,
                           "were not used when initializing ModelForTest: "
                           "[decoder.weight]"));
  EXPECT_THROW(load_checkpoint_in_model(model, dir.path(), LoadCheckpointOptions{.strict = true}),
               MissingTensor);
  try {
    load_checkpoint_in_model(
        model, dir.path(),
        LoadCheckpointOptions{.device_map = plan::DeviceMap{{"linear1", Placement::cpu()}}});
    FAIL();
  } catch (const InvalidDeviceMap& e) {
    EXPECT_STREQ(e.what(), "batchnorm.bias doesn't have any device set.");
  }
}

// A checkpoint of Sequential(layer, layer) as Hugging Face saves it (the shared layer once, under
// "0"), loaded into the same model built on meta with "1" on disk: the second name reads the
// first's tensors, and the output equals the model's that never left memory.
TEST(LoadCheckpoint, ModuleUnderTwoNamesWithOneNameOnDisk) {
  TempDir dir;
  const auto pair = [](std::shared_ptr<nn::Linear> layer) {
    auto seq = std::make_shared<nn::Sequential>();
    seq->push_back(layer);
    seq->push_back(layer);
    return seq;
  };
  auto reference = pair(std::make_shared<nn::Linear>(6, 6));
  const at::Tensor x = at::randn({3, 6});
  const at::Tensor expected = (*reference)(x);
  io::save_sharded(dir / "checkpoint", reference->state_dict());
  std::shared_ptr<nn::Sequential> model;
  {
    nn::InitEmptyWeights guard;
    model = pair(std::make_shared<nn::Linear>(6, 6));
  }
  LogCapture quiet;
  load_checkpoint_and_dispatch(
      *model, dir / "checkpoint",
      {.device_map = plan::DeviceMap{{"0", Placement::cpu()}, {"1", Placement::disk()}}});
  EXPECT_TRUE(at::equal((*model)(x), expected));
}

TEST(LoadCheckpoint, BadStrategyStringIsTheSpecError) {
  try {
    plan::parse_strategy("fastest");
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_STREQ(e.what(),
                 "If passing a string for `device_map`, please choose 'auto', 'balanced', "
                 "'balanced_low_0' or 'sequential'.");
  }
}

}  // namespace
}  // namespace ferry::dispatch
