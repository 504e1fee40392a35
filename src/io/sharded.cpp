#include "ferry/io/sharded.h"

#include <algorithm>
#include <set>

#include "ferry/core/error.h"
#include "ferry/core/log.h"
#include "ferry/io/safetensors_writer.h"
#include "io/confined_path.h"
#include "io/json_file.h"
#include "io/printable.h"
#include "io/sharded_index.h"

namespace ferry::io {
namespace {

CorruptFile index_error(const std::filesystem::path& index, std::string_view tensor,
                        std::string message, std::string expected, std::string actual) {
  return CorruptFile(std::move(message), ErrorFields{.path = std::string(tensor),
                                                     .file = index.string(),
                                                     .expected = std::move(expected),
                                                     .actual = std::move(actual)});
}

}  // namespace

std::shared_ptr<const ShardedCheckpoint> ShardedCheckpoint::open(
    const std::filesystem::path& index_path) {
  const std::string file = index_path.string();
  ShardedIndex parsed = parse_sharded_index(read_text_file(index_path), file);
  auto result = std::shared_ptr<ShardedCheckpoint>(new ShardedCheckpoint());
  result->index_path_ = index_path;
  result->total_size_bytes_ = parsed.total_size_bytes;
  std::set<std::string> shards;
  for (auto& [name, shard] : parsed.weight_map) {
    shards.insert(shard);
    result->names_.push_back(name);
    result->weight_map_.emplace(std::move(name), std::move(shard));
  }
  std::sort(result->names_.begin(), result->names_.end());
  result->shard_files_.assign(shards.begin(), shards.end());
  const std::filesystem::path folder = index_path.parent_path();
  for (const std::string& shard : result->shard_files_) {
    // Symlinks are followed: the Hugging Face cache links each file of a snapshot to a blob
    // outside the snapshot's folder. The names themselves were confined by the parser.
    const auto path = confined_path(folder, shard, Symlinks::kFollow);
    FERRY_ASSERT(path.has_value(), "shard {} of {} escaped the parser's check", shard, file);
    std::error_code ec;
    if (!std::filesystem::is_regular_file(*path, ec)) {
      const auto it = std::find_if(result->weight_map_.begin(), result->weight_map_.end(),
                                   [&](const auto& kv) { return kv.second == shard; });
      throw index_error(index_path, it->first,
                        fmt::format("tensor '{}' in {}: shard {} does not exist: expected a "
                                    "regular file at {}, got none",
                                    printable(it->first), file, shard, path->string()),
                        path->string(), "no file");
    }
  }
  return result;
}

const std::string& ShardedCheckpoint::shard_of(std::string_view name) const {
  auto it = weight_map_.find(std::string(name));
  if (it == weight_map_.end()) throw missing(name);
  return it->second;
}

std::shared_ptr<const SafetensorsFile> ShardedCheckpoint::shard(const std::string& file) const {
  {
    std::lock_guard lock(mutex_);
    if (auto it = shards_.find(file); it != shards_.end()) return it->second;
  }
  FERRY_CHECK(std::binary_search(shard_files_.begin(), shard_files_.end(), file), InvalidArgument,
              "{} is not a shard of {}", file, index_path_.string());
  // Opened outside the lock: mapping and parsing may take a while; a racing thread's copy wins.
  auto opened = check_shard(file);
  std::lock_guard lock(mutex_);
  return shards_.emplace(file, std::move(opened)).first->second;
}

std::shared_ptr<const SafetensorsFile> ShardedCheckpoint::check_shard(
    const std::string& file) const {
  auto shard = SafetensorsFile::open(index_path_.parent_path() / file);
  const std::string index = index_path_.string();
  for (const SafetensorsEntry& e : shard->entries()) {
    auto it = weight_map_.find(e.info.name);
    if (it == weight_map_.end()) {
      log_debug("{}: tensor '{}' of shard {} is not in the index; ignored", index, e.info.name,
                file);
    } else if (it->second != file) {
      throw index_error(
          index_path_, e.info.name,
          fmt::format("tensor '{}' in {}: named in two shards, {} (per the index) "
                      "and {}: expected it only in {}, got it also in {}",
                      printable(e.info.name), index, it->second, file, it->second, file),
          it->second, file);
    }
  }
  for (const auto& [name, where] : weight_map_) {
    if (where == file && shard->entry(name) == nullptr) {
      throw index_error(index_path_, name,
                        fmt::format("tensor '{}' in {}: the index puts it in {}, which does not "
                                    "contain it: expected it in {}, got no such tensor",
                                    printable(name), index, file, file),
                        file, "no such tensor");
    }
  }
  return shard;
}

void ShardedCheckpoint::validate() const {
  std::uint64_t total = 0;
  for (const std::string& file : shard_files_) {
    auto s = shard(file);
    for (const auto& [name, where] : weight_map_) {
      if (where != file) continue;
      const SafetensorsEntry* entry = s->entry(name);
      if (entry == nullptr) throw missing(name);  // mapped to a shard that lacks it
      total += entry->info.size_bytes();
    }
  }
  if (total_size_bytes_ && *total_size_bytes_ != total) {
    // Tensors sharing storage are counted once in total_size, so a larger sum is not an error.
    log_info("{}: metadata.total_size is {} bytes; its tensors hold {} bytes", index_path_.string(),
             *total_size_bytes_, total);
  }
}

std::optional<TensorInfo> ShardedCheckpoint::find(std::string_view name) const {
  auto it = weight_map_.find(std::string(name));
  if (it == weight_map_.end()) return std::nullopt;
  return shard(it->second)->find(name);
}

at::Tensor ShardedCheckpoint::load(std::string_view name, const LoadOptions& options) const {
  return shard(shard_of(name))->load(name, options);
}

std::optional<FileExtent> ShardedCheckpoint::extent(std::string_view name) const {
  return shard(shard_of(name))->extent(name);
}

std::filesystem::path ShardedCheckpoint::file_of(std::string_view name) const {
  return index_path_.parent_path() / shard_of(name);
}

}  // namespace ferry::io
