#include "ferry/io/safetensors.h"

#include <algorithm>
#include <cstring>

#include "ferry/core/error.h"
#include "ferry/core/log.h"
#include "io/mapped_file.h"
#include "io/tensor_bytes.h"

namespace ferry::io {

std::shared_ptr<const SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
  auto mapping = MappedFile::open(path);
  // Read through the mapping's reader (pread), not its pages (read_safetensors_header_with).
  SafetensorsHeader header = read_safetensors_header_with(
      mapping->size_bytes(),
      [&](std::uint64_t offset, std::span<std::byte> buffer) {
        mapping->read(offset, buffer);
        return buffer.size();
      },
      path.string());
  return std::shared_ptr<const SafetensorsFile>(
      new SafetensorsFile(path, std::move(mapping), std::move(header)));
}

SafetensorsFile::SafetensorsFile(std::filesystem::path path,
                                 std::shared_ptr<const MappedFile> mapping,
                                 SafetensorsHeader header)
    : path_(std::move(path)), mapping_(std::move(mapping)), header_(std::move(header)) {
  names_.reserve(header_.entries.size());
  index_.reserve(header_.entries.size());
  for (std::size_t i = 0; i < header_.entries.size(); ++i) {
    names_.push_back(header_.entries[i].info.name);
    index_.emplace(header_.entries[i].info.name, i);
  }
  std::sort(names_.begin(), names_.end());
}

std::uint64_t SafetensorsFile::file_size_bytes() const noexcept { return mapping_->size_bytes(); }

const SafetensorsEntry* SafetensorsFile::entry(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.entries[it->second];
}

const SafetensorsEntry& SafetensorsFile::require(std::string_view name) const {
  if (const SafetensorsEntry* e = entry(name)) return *e;
  throw missing(name);
}

std::span<const std::byte> SafetensorsFile::bytes(std::string_view name) const {
  const SafetensorsEntry& e = require(name);
  return mapping_->bytes().subspan(header_.data_offset_bytes + e.begin_bytes,
                                   e.end_bytes - e.begin_bytes);
}

void SafetensorsFile::prefetch(std::string_view name) const {
  const SafetensorsEntry& e = require(name);
  mapping_->advise_willneed(header_.data_offset_bytes + e.begin_bytes, e.end_bytes - e.begin_bytes);
}

std::optional<TensorInfo> SafetensorsFile::find(std::string_view name) const {
  if (const SafetensorsEntry* e = entry(name)) return e->info;
  return std::nullopt;
}

at::Tensor SafetensorsFile::load(std::string_view name, const LoadOptions& options) const {
  const SafetensorsEntry& e = require(name);
  return load_from_file(mapping_, header_.data_offset_bytes + e.begin_bytes, e.info, options);
}

std::filesystem::path SafetensorsFile::file_of(std::string_view name) const {
  require(name);
  return path_;
}

std::optional<FileExtent> SafetensorsFile::extent(std::string_view name) const {
  const SafetensorsEntry& e = require(name);
  return FileExtent{.file = path_,
                    .offset = header_.data_offset_bytes + e.begin_bytes,
                    .length = e.end_bytes - e.begin_bytes,
                    .dtype = e.info.dtype,
                    .shape = e.info.shape};
}

void check_pt_format(const SafetensorsFile& file) {
  auto it = file.metadata().find("format");
  if (file.metadata().empty()) {
    log_warning(
        "The safetensors archive passed at {} does not contain metadata. Make sure to save your "
        "model with the `save_pretrained` method. Defaulting to 'pt' metadata.",
        file.path().string());
    return;
  }
  const std::string format = it == file.metadata().end() ? "" : it->second;
  if (format == "pt") return;
  if (format == "tf" || format == "flax") {
    throw InvalidArgument(
        fmt::format("{}: the checkpoint was saved with {}, we need the pt format",
                    file.path().string(), format),
        ErrorFields{.file = file.path().string(), .expected = "pt", .actual = format});
  }
  throw CorruptFile(fmt::format("The safetensors archive passed at {} does not contain the valid "
                                "metadata. Make sure you save your model with the "
                                "`save_pretrained` method.",
                                file.path().string()),
                    ErrorFields{.file = file.path().string(),
                                .expected = "format pt",
                                .actual = format.empty() ? "no format" : format});
}

}  // namespace ferry::io
