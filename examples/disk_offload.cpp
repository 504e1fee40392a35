// disk_offload: the model's weights are written to an offload folder (Accelerate's format) and
// read from it at each module call.
#include <filesystem>
#include <iostream>

#include "example_model.h"

int main() {
  const auto folder = std::filesystem::temp_directory_path() / "ferry-example-disk-offload";
  std::filesystem::remove_all(folder);
  example::Model model(64, 16, 4);
  const at::Tensor ids = at::randint(64, {1, 8});
  const at::Tensor expected = model(ids);
  ferry::dispatch::disk_offload(model, folder);
  const bool same = at::equal(model(ids), expected);
  std::cout << "weights in " << folder << ", output equal: " << (same ? "yes" : "NO") << "\n";
  std::filesystem::remove_all(folder);
  return same ? 0 : 1;
}
