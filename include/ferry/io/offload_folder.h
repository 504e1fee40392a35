#pragma once
// Accelerate's offload folder (spec §3.3): "index.json" mapping each tensor name to
// {"dtype": numpy name, "shape": [...]}, and one raw "<name>.dat" per tensor (C order,
// little-endian, no header; bfloat16 as raw 16-bit words marked "bfloat16"; a 0-dim tensor as a
// one-element file with shape []). An entry may instead point into a safetensors file
// ({"safetensors_file", "weight_name", "dtype"}), so disk-offloaded weights are read in place
// from the original checkpoint without a second copy.

#include <ATen/ATen.h>

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/io/offload_index.h"
#include "ferry/io/safetensors.h"
#include "ferry/io/tensor_source.h"

namespace ferry::io {

// Writes `weight` (any device) as "<folder>/<name>.dat" atomically, mode 0600, and appends or
// replaces its entry in `index` (Accelerate's offload_weight). Throws InvalidArgument for a name
// with '/'.
void offload_weight(const at::Tensor& weight, const std::string& name,
                    const std::filesystem::path& folder, OffloadIndex& index);
// Writes every tensor and merges the index (Accelerate's offload_state_dict).
void offload_state_dict(const std::filesystem::path& folder,
                        const std::vector<std::pair<std::string, at::Tensor>>& tensors);

class OffloadFolder final : public TensorSource {
 public:
  // Reads "<folder>/index.json" as untrusted input: every file it names must stay inside
  // `folder`. A safetensors entry's "safetensors_file" must be a relative path without "..";
  // it, and each "<name>.dat", must still lie inside `folder` once symlinks are resolved
  // (checked when the file is opened). Throws IoError, CorruptFile (naming the entry).
  // Data files are opened on load.
  static std::shared_ptr<const OffloadFolder> open(const std::filesystem::path& folder);
  // An offload folder over entries ferry built itself in this process (not read from a file):
  // trusted as given, so a safetensors entry may point anywhere, e.g. an absolute path into
  // the original checkpoint read in place; relative paths and "<name>.dat" files are taken
  // relative to `folder`. Nothing is read here (index.json in `folder` is ignored). Throws
  // InvalidArgument for a name that is not a plain file name, a name given twice, or a raw
  // entry without a dtype. Never pass it entries parsed from a file: use open().
  static std::shared_ptr<const OffloadFolder> from_index(const std::filesystem::path& folder,
                                                         OffloadIndex entries);

  const std::filesystem::path& folder() const noexcept { return folder_; }
  const OffloadIndex& entries() const noexcept { return index_; }

  // TensorSource. A raw entry loads as a view of its mapped .dat file (CorruptFile when the
  // file's size is not the entry's bytes); a safetensors entry as that file's tensor, converted
  // to the entry's dtype when it names one (options.dtype wins). find() of a safetensors entry
  // reports the entry's dtype when given, and the file's shape.
  const std::vector<std::string>& names() const override { return names_; }
  std::optional<TensorInfo> find(std::string_view name) const override;
  at::Tensor load(std::string_view name, const LoadOptions& options = {}) const override;
  std::filesystem::path file_of(std::string_view name) const override;
  std::string description() const override;
  // A raw entry: its whole .dat file (offset 0; the file's size is not checked here). A
  // safetensors entry: that file's extent, with the *stored* dtype, which may differ from the
  // entry's (target) dtype that find() reports.
  std::optional<FileExtent> extent(std::string_view name) const override;

 private:
  OffloadFolder() = default;
  const OffloadEntry& require(std::string_view name) const;
  std::shared_ptr<const SafetensorsFile> safetensors(const OffloadEntry& entry) const;
  // The file an entry's bytes are in: its safetensors file or "<folder>/<name>.dat", confined
  // to the folder unless the index is trusted. Throws CorruptFile naming the entry.
  std::filesystem::path data_path(const OffloadEntry& entry) const;

  std::filesystem::path folder_;
  bool trusted_ = false;  // built by from_index(): paths are used as they are
  OffloadIndex index_;
  std::vector<std::string> names_;                             // sorted
  std::map<std::string, std::size_t, std::less<>> positions_;  // name → index_ position
  mutable std::mutex mutex_;                                   // guards files_, confined_
  mutable std::map<std::filesystem::path, std::shared_ptr<const SafetensorsFile>> files_;
  mutable std::vector<std::filesystem::path> confined_;  // per entry: its checked path, or empty
};

}  // namespace ferry::io
