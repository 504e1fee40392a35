#include "ferry/io/checkpoint_headers.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <unistd.h>
#include <unordered_map>
#include <vector>

#include "ferry/core/error.h"
#include "ferry/io/offload_index.h"
#include "io/confined_path.h"
#include "io/json_file.h"
#include "io/offload_names.h"
#include "io/printable.h"
#include "io/regular_file.h"
#include "io/sharded_index.h"

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

namespace {

// Reads exactly out.size() bytes at `offset` (fewer only at the end of the file).
std::size_t pread_full(const RegularFile& file, std::span<std::byte> out, std::uint64_t offset,
                       const std::filesystem::path& path) {
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::pread(file.fd.get(), out.data() + done, out.size() - done,
                              static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      throw IoError(fmt::format("cannot read {}: {}", path.string(), std::strerror(errno)),
                    ErrorFields{.file = path.string()});
    }
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  return done;
}

// Headers of safetensors files, each read once, with their tensors by name.
class HeaderCache {
 public:
  struct Indexed {
    SafetensorsHeader header;
    std::unordered_map<std::string_view, std::size_t> by_name;

    const SafetensorsEntry* find(std::string_view name) const {
      auto it = by_name.find(name);
      return it == by_name.end() ? nullptr : &header.entries[it->second];
    }
  };

  const Indexed& get(const std::filesystem::path& path) {
    auto it = files_.find(path.string());
    if (it != files_.end()) return *it->second;
    auto indexed = std::make_unique<Indexed>(Indexed{read_safetensors_header(path), {}});
    for (std::size_t i = 0; i < indexed->header.entries.size(); ++i) {
      indexed->by_name.emplace(indexed->header.entries[i].info.name, i);
    }
    return *files_.emplace(path.string(), std::move(indexed)).first->second;
  }
  std::size_t size() const { return files_.size(); }

 private:
  std::unordered_map<std::string, std::unique_ptr<Indexed>> files_;
};

MissingTensor missing_in(std::string_view name, const std::filesystem::path& file,
                         const std::filesystem::path& named_by) {
  return MissingTensor(fmt::format("tensor '{}' not found in {} (named by {})", printable(name),
                                   file.string(), named_by.string()),
                       ErrorFields{.path = std::string(name),
                                   .file = file.string(),
                                   .expected = "the tensor in that file",
                                   .actual = "no such tensor"});
}

void read_sharded(CheckpointHeaders& out) {
  const std::filesystem::path& index_path = out.location.path;
  const ShardedIndex index = parse_sharded_index(read_text_file(index_path), index_path.string());
  out.index_total_size_bytes = index.total_size_bytes;
  const std::filesystem::path folder = index_path.parent_path();
  HeaderCache shards;
  std::unordered_map<std::string, std::filesystem::path> paths;
  for (const auto& [name, shard] : index.weight_map) {
    auto known = paths.find(shard);
    if (known == paths.end()) {
      const auto path = confined_path(folder, shard, Symlinks::kFollow);
      FERRY_ASSERT(path.has_value(), "shard {} of {} escaped the parser's check", shard,
                   index_path.string());
      std::error_code ec;
      if (!std::filesystem::is_regular_file(*path, ec)) {
        throw CorruptFile(fmt::format("tensor '{}' in {}: shard {} does not exist: expected a "
                                      "regular file at {}, got none",
                                      printable(name), index_path.string(), shard, path->string()),
                          ErrorFields{.path = name,
                                      .file = index_path.string(),
                                      .expected = path->string(),
                                      .actual = "no file"});
      }
      known = paths.emplace(shard, *path).first;
    }
    const HeaderCache::Indexed& header = shards.get(known->second);
    if (shards.size() == 1) out.metadata = header.header.metadata;
    const SafetensorsEntry* entry = header.find(name);
    if (entry == nullptr) throw missing_in(name, known->second, index_path);
    out.tensors.push_back({entry->info, known->second});
  }
}

void read_offload_folder(CheckpointHeaders& out) {
  const std::filesystem::path& folder = out.location.path;
  const std::filesystem::path index_path = folder / "index.json";
  std::error_code ec;
  HeaderCache headers;
  for (const OffloadEntry& e : open_offload_index(folder)) {
    if (!e.in_safetensors()) {
      const TensorInfo info{.name = e.name, .dtype = *e.dtype, .shape = e.shape};
      const std::filesystem::path file = folder / (e.name + ".dat");
      // Checked by size alone, so inspecting never reads weights.
      const auto size = std::filesystem::file_size(file, ec);
      if (info.size_bytes() > 0 && (ec || size != info.size_bytes())) {
        throw CorruptFile(
            fmt::format("tensor '{}' in {}: size does not match index.json: expected {} bytes, "
                        "got {}",
                        printable(e.name), file.string(), info.size_bytes(),
                        ec ? "no file" : std::to_string(size)),
            ErrorFields{.path = e.name,
                        .file = file.string(),
                        .expected = std::to_string(info.size_bytes()),
                        .actual = ec ? "no file" : std::to_string(size)});
      }
      out.tensors.push_back({info, file});
      continue;
    }
    // Note [Offload index paths] (offload_folder.cpp): what an index read from disk names lies
    // inside its folder, symlinks resolved.
    const auto file = confined_path(folder, e.safetensors_file.native(), Symlinks::kConfine);
    if (!file) {
      throw escaping_safetensors_file(e, index_path);
    }
    const std::string& weight = e.weight_name.empty() ? e.name : e.weight_name;
    const SafetensorsEntry* entry = headers.get(*file).find(weight);
    if (entry == nullptr) throw missing_in(weight, *file, index_path);
    TensorInfo info = entry->info;
    info.name = e.name;
    if (e.dtype) info.dtype = *e.dtype;
    out.tensors.push_back({std::move(info), *file});
  }
}

}  // namespace

SafetensorsHeader read_safetensors_header(const std::filesystem::path& path) {
  const RegularFile file = open_regular_file(path);
  // pread, not a mapping: a first fault on a cold mapping reads a whole readahead window.
  return read_safetensors_header_with(
      file.size_bytes,
      [&](std::uint64_t offset, std::span<std::byte> buffer) {
        return pread_full(file, buffer, offset, path);
      },
      path.string());
}

CheckpointHeaders read_checkpoint_headers(const std::filesystem::path& path) {
  CheckpointHeaders out{.location = resolve_checkpoint(path)};
  switch (out.location.kind) {
    case CheckpointKind::kSafetensors: {
      SafetensorsHeader header = read_safetensors_header(out.location.path);
      out.metadata = std::move(header.metadata);
      for (SafetensorsEntry& e : header.entries) {
        out.tensors.push_back({std::move(e.info), out.location.path});
      }
      break;
    }
    case CheckpointKind::kShardedIndex: read_sharded(out); break;
    case CheckpointKind::kOffloadFolder: read_offload_folder(out); break;
  }
  std::sort(out.tensors.begin(), out.tensors.end(),
            [](const HeaderTensor& a, const HeaderTensor& b) { return a.info.name < b.info.name; });
  return out;
}

}  // namespace ferry::io
