#pragma once
// Reading a safetensors file (spec §3.1): the file is mapped once and its header validated as a
// whole on open; a CPU tensor of the stored dtype is then a zero-copy view of the mapping that
// keeps it alive. Conversions to another dtype or device go through LoadOptions.

#include <cstddef>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include "ferry/io/safetensors_header.h"
#include "ferry/io/tensor_source.h"

namespace ferry::io {

class MappedFile;

class SafetensorsFile final : public TensorSource {
 public:
  // Maps `path` and validates its header. Throws IoError (cannot open or map) or CorruptFile
  // (see parse_safetensors_header). No tensor data is read.
  static std::shared_ptr<const SafetensorsFile> open(const std::filesystem::path& path);

  const std::filesystem::path& path() const noexcept { return path_; }
  // Entries in data order, with their byte ranges.
  const std::vector<SafetensorsEntry>& entries() const noexcept { return header_.entries; }
  // The entry of `name`, or nullptr.
  const SafetensorsEntry* entry(std::string_view name) const;
  // "__metadata__" (empty when absent).
  const std::map<std::string, std::string>& metadata() const noexcept { return header_.metadata; }
  std::uint64_t file_size_bytes() const noexcept;
  // Offset of the data region in the file (8 + header length).
  std::uint64_t data_offset_bytes() const noexcept { return header_.data_offset_bytes; }

  // The stored bytes of `name`, valid while this object lives. Works for every dtype, including
  // those LibTorch lacks. Throws MissingTensor.
  std::span<const std::byte> bytes(std::string_view name) const;
  // Starts reading `name`'s bytes into the page cache in the background (madvise WILLNEED).
  void prefetch(std::string_view name) const;

  // TensorSource. load() with default options returns a view of the mapping (copied once if its
  // address is not aligned to the element size); the view keeps the mapping alive after this
  // object is gone. Writing to a view changes private pages only, never the file.
  const std::vector<std::string>& names() const override { return names_; }
  std::optional<TensorInfo> find(std::string_view name) const override;
  at::Tensor load(std::string_view name, const LoadOptions& options = {}) const override;
  std::filesystem::path file_of(std::string_view name) const override;
  std::string description() const override { return path_.string(); }
  // Offset: data_offset_bytes() + the entry's begin_bytes.
  std::optional<FileExtent> extent(std::string_view name) const override;

 private:
  SafetensorsFile(std::filesystem::path path, std::shared_ptr<const MappedFile> mapping,
                  SafetensorsHeader header);
  const SafetensorsEntry& require(std::string_view name) const;

  std::filesystem::path path_;
  std::shared_ptr<const MappedFile> mapping_;
  SafetensorsHeader header_;
  std::vector<std::string> names_;                           // sorted
  std::unordered_map<std::string_view, std::size_t> index_;  // name → position in entries
};

// Accelerate's load_state_dict check of "__metadata__" (§2.18): absent ⇒ warning and "pt";
// "format" "tf"/"flax" ⇒ InvalidArgument; any other value but "pt" ⇒ CorruptFile.
void check_pt_format(const SafetensorsFile& file);

}  // namespace ferry::io
