// save_sharded of ferry/io/sharded.h: the shard-splitting writer.
#include <nlohmann/json.hpp>

#include <set>

#include "ferry/core/error.h"
#include "ferry/io/safetensors_writer.h"
#include "ferry/io/sharded.h"
#include "io/json_file.h"

namespace ferry::io {

std::filesystem::path save_sharded(const std::filesystem::path& folder,
                                   const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                   const ShardOptions& options) {
  std::set<std::string_view> seen;
  for (const auto& [name, tensor] : tensors) {
    FERRY_CHECK(seen.insert(name).second, InvalidArgument,
                "cannot write a checkpoint to {}: tensor '{}' given twice", folder.string(), name);
  }
  // Greedy split as transformers' shard_checkpoint / Accelerate's save_model: start a new shard
  // when adding the tensor would pass the limit and the current shard is not empty.
  std::vector<std::map<std::string, at::Tensor>> shards;
  std::uint64_t current_bytes = 0;
  std::uint64_t total_bytes = 0;
  for (const auto& [name, tensor] : tensors) {
    const auto size = static_cast<std::uint64_t>(tensor.numel()) *
                      static_cast<std::uint64_t>(tensor.element_size());
    if (shards.empty() ||
        (!shards.back().empty() && current_bytes + size > options.max_shard_size.value())) {
      shards.emplace_back();
      current_bytes = 0;
    }
    shards.back().emplace(name, tensor);
    current_bytes += size;
    total_bytes += size;
  }
  std::filesystem::create_directories(folder);
  const SaveOptions save{.metadata = options.metadata};
  if (shards.size() <= 1) {
    const auto path = folder / (options.base_name + ".safetensors");
    save_safetensors(path, shards.empty() ? std::map<std::string, at::Tensor>{} : shards[0], save);
    if (options.progress) options.progress(total_bytes, total_bytes);
    return path;
  }
  std::uint64_t written_bytes = 0;
  nlohmann::json weight_map = nlohmann::json::object();
  for (std::size_t i = 0; i < shards.size(); ++i) {
    const std::string file =
        fmt::format("{}-{:05d}-of-{:05d}.safetensors", options.base_name, i + 1, shards.size());
    save_safetensors(folder / file, shards[i], save);
    for (const auto& entry : shards[i]) {
      weight_map[entry.first] = file;
      written_bytes += static_cast<std::uint64_t>(entry.second.numel()) *
                       static_cast<std::uint64_t>(entry.second.element_size());
    }
    if (options.progress) options.progress(written_bytes, total_bytes);
  }
  // json.dumps(index, indent=2, sort_keys=True) + "\n": nlohmann::json keeps keys sorted, and
  // ensure_ascii matches Python's default escaping of non-ASCII names.
  const nlohmann::json index{{"metadata", {{"total_size", total_bytes}}},
                             {"weight_map", std::move(weight_map)}};
  const auto index_path = folder / (options.base_name + ".safetensors.index.json");
  write_text_file(index_path, index.dump(2, ' ', /*ensure_ascii=*/true) + "\n");
  return index_path;
}

}  // namespace ferry::io
