#pragma once
// Sharded checkpoints (spec §3.2): "model.safetensors.index.json" maps each tensor name to its
// shard file; the index is authoritative. Shards are mapped lazily, on first use, and checked
// against the index when opened. Also the writer that splits tensors into shards.

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ferry/core/bytes.h"
#include "ferry/io/safetensors.h"
#include "ferry/io/tensor_source.h"

namespace ferry::io {

class ShardedCheckpoint final : public TensorSource {
 public:
  // Reads the index ({"metadata": {"total_size": N}, "weight_map": {name: file}}, or a flat
  // {name: file} map) and checks that every shard file exists. Shard paths are relative to the
  // index's folder. Throws IoError or CorruptFile (bad JSON, a name listed twice, a shard that
  // is missing or outside the folder).
  static std::shared_ptr<const ShardedCheckpoint> open(const std::filesystem::path& index_path);

  const std::filesystem::path& index_path() const noexcept { return index_path_; }
  // Shard file names as the index spells them, sorted, unique.
  const std::vector<std::string>& shard_files() const noexcept { return shard_files_; }
  // "metadata"."total_size" when the index has it.
  std::optional<std::uint64_t> total_size_bytes() const noexcept { return total_size_bytes_; }
  // The shard file name the index gives for `name`. Throws MissingTensor.
  const std::string& shard_of(std::string_view name) const;
  // Shard `file` (one of shard_files()), mapped and checked on first use. Throws CorruptFile
  // when the shard lacks a tensor the index puts there, or holds a tensor the index puts in
  // another shard (naming both files).
  std::shared_ptr<const SafetensorsFile> shard(const std::string& file) const;
  // Opens and checks every shard (as `ferry inspect` does).
  void validate() const;

  // TensorSource: names are the index's; find() and load() open the holding shard.
  const std::vector<std::string>& names() const override { return names_; }
  std::optional<TensorInfo> find(std::string_view name) const override;
  at::Tensor load(std::string_view name, const LoadOptions& options = {}) const override;
  std::filesystem::path file_of(std::string_view name) const override;
  std::string description() const override { return index_path_.string(); }
  // The holding shard's extent (opens that shard on first use, as find() does).
  std::optional<FileExtent> extent(std::string_view name) const override;

 private:
  ShardedCheckpoint() = default;
  std::shared_ptr<const SafetensorsFile> check_shard(const std::string& file) const;

  std::filesystem::path index_path_;
  std::optional<std::uint64_t> total_size_bytes_;
  std::vector<std::string> names_;                           // sorted
  std::unordered_map<std::string, std::string> weight_map_;  // name → shard file
  std::vector<std::string> shard_files_;
  mutable std::mutex mutex_;  // guards shards_
  mutable std::map<std::string, std::shared_ptr<const SafetensorsFile>> shards_;
};

struct ShardOptions {
  Bytes max_shard_size{10'000'000'000};  // Accelerate's default "10GB"
  std::string base_name = "model";       // files "<base>-00001-of-0000N.safetensors"
  std::map<std::string, std::string> metadata{{"format", "pt"}};  // each shard's __metadata__
  // Called after each shard file is written: (tensor bytes written so far, bytes of all shards).
  std::function<void(std::uint64_t bytes_done, std::uint64_t bytes_total)> progress;
};

// Writes `tensors` into `folder` split greedily in the given (state-dict) order as Accelerate's
// save_model does (a new shard when the current one would pass max_shard_size; a larger tensor
// gets its own), then "<base>.safetensors.index.json" (indent 2, sorted keys). A single shard is
// written as
// "<base>.safetensors" without an index. Every file is written atomically; the index last.
// Returns the index path, or the single file's path.
std::filesystem::path save_sharded(const std::filesystem::path& folder,
                                   const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                   const ShardOptions& options = {});

}  // namespace ferry::io
