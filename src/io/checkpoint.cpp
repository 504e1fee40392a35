#include "ferry/io/checkpoint.h"

#include <vector>

#include "ferry/core/error.h"
#include "ferry/io/offload_folder.h"
#include "ferry/io/safetensors.h"
#include "ferry/io/sharded.h"

namespace ferry::io {
namespace {

Unsupported pickle_checkpoint(const std::filesystem::path& path) {
  return Unsupported(fmt::format("{} is a PyTorch pickle checkpoint; ferry reads safetensors only "
                                 "(convert it with safetensors' convert script)",
                                 path.string()),
                     ErrorFields{.file = path.string(),
                                 .expected = "a safetensors checkpoint",
                                 .actual = "a .bin pickle"});
}

CheckpointLocation resolve_folder(const std::filesystem::path& folder) {
  if (std::filesystem::is_regular_file(folder / "model.safetensors")) {
    return {CheckpointKind::kSafetensors, folder / "model.safetensors"};
  }
  if (std::filesystem::is_regular_file(folder / "pytorch_model.bin")) {
    throw pickle_checkpoint(folder / "pytorch_model.bin");
  }
  std::vector<std::filesystem::path> indexes;
  for (const auto& item : std::filesystem::directory_iterator(folder)) {
    const std::string name = item.path().filename().string();
    if (name.ends_with(".index.json") && item.is_regular_file()) indexes.push_back(item.path());
  }
  if (indexes.size() > 1) {
    throw InvalidArgument(fmt::format("{} containing more than one `.index.json` file, delete the "
                                      "irrelevant ones.",
                                      folder.string()),
                          ErrorFields{.file = folder.string(),
                                      .expected = "one .index.json",
                                      .actual = std::to_string(indexes.size())});
  }
  if (indexes.size() == 1) {
    if (indexes[0].filename().string().starts_with("pytorch_model.bin")) {
      throw pickle_checkpoint(indexes[0]);
    }
    return {CheckpointKind::kShardedIndex, indexes[0]};
  }
  if (std::filesystem::is_regular_file(folder / "index.json")) {
    return {CheckpointKind::kOffloadFolder, folder};
  }
  throw InvalidArgument(fmt::format("{} is not a folder containing a `.index.json` file or a "
                                    "pytorch_model.bin or a model.safetensors file",
                                    folder.string()),
                        ErrorFields{.file = folder.string(),
                                    .expected = "model.safetensors or an .index.json",
                                    .actual = "neither"});
}

}  // namespace

CheckpointLocation resolve_checkpoint(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return resolve_folder(path);
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw InvalidArgument(
        fmt::format("`checkpoint` should be the path to a file containing a whole state dict, or "
                    "the index of a sharded checkpoint, or a folder containing a sharded "
                    "checkpoint or the whole state dict, but got {}.",
                    path.string()),
        ErrorFields{
            .file = path.string(), .expected = "a file or folder", .actual = "no such path"});
  }
  const std::string name = path.filename().string();
  if (name == "index.json") return {CheckpointKind::kOffloadFolder, path.parent_path()};
  if (name.ends_with(".json")) {
    if (name.starts_with("pytorch_model.bin")) throw pickle_checkpoint(path);
    return {CheckpointKind::kShardedIndex, path};
  }
  if (name.ends_with(".bin") || name.ends_with(".pt") || name.ends_with(".pth")) {
    throw pickle_checkpoint(path);
  }
  return {CheckpointKind::kSafetensors, path};
}

std::shared_ptr<const TensorSource> open_checkpoint(const std::filesystem::path& path) {
  const CheckpointLocation where = resolve_checkpoint(path);
  switch (where.kind) {
    case CheckpointKind::kSafetensors: return SafetensorsFile::open(where.path);
    case CheckpointKind::kShardedIndex: return ShardedCheckpoint::open(where.path);
    case CheckpointKind::kOffloadFolder: return OffloadFolder::open(where.path);
  }
  throw InternalError("open_checkpoint: unknown checkpoint kind");
}

}  // namespace ferry::io
