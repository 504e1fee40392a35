// Build a model without memory, then load a checkpoint into it with device_map "auto":
// ferry plans where each block rests under the budgets and brings offloaded blocks to the
// execution device just in time. Usage: example_load_and_dispatch WORK_DIR
#include <ferry/io/sharded.h>
#include <filesystem>
#include <iostream>

#include "example_model.h"

int main(int argc, char** argv) {
  const std::filesystem::path work =
      argc > 1 ? argv[1] : std::filesystem::temp_directory_path() / "ferry-example";
  std::filesystem::create_directories(work);
  // A checkpoint to load: the state dict of a model with real weights, in 4 KB shards.
  example::Model trained(64, 16, 4);
  ferry::io::save_sharded(work / "checkpoint", trained.state_dict(),
                          ferry::io::ShardOptions{.max_shard_size = ferry::Bytes(4096)});
  const at::Tensor ids = at::randint(64, {1, 8});
  const at::Tensor expected = trained(ids);

  // 1. Build on the meta device: no weight memory.
  std::unique_ptr<example::Model> model;
  {
    ferry::nn::InitEmptyWeights guard;
    model = std::make_unique<example::Model>(64, 16, 4);
  }
  // 2. Plan, load and dispatch: a small CPU budget pushes the tail of the model to disk.
  ferry::plan::MemoryBudget budget;
  budget.set(ferry::Placement::cpu(), ferry::Bytes(40000));  // weights + staging of streamed blocks
  const ferry::plan::DeviceMap map =
      ferry::dispatch::load_checkpoint_and_dispatch(*model, work / "checkpoint",
                                                    {.device_map = ferry::plan::Strategy::kAuto,
                                                     .max_memory = budget,
                                                     .no_split_module_classes = {"Block"},
                                                     .offload_folder = work / "offload"});
  std::cout << "device map: " << map.to_json() << "\n";
  // 3. Run: same result as the model that never left memory.
  const bool same = at::equal((*model)(ids), expected);
  std::cout << "output equals the in-memory model: " << (same ? "yes" : "NO") << "\n";
  std::filesystem::remove_all(work);
  return same ? 0 : 1;
}
