#include "ferry/io/offload_folder.h"

#include <algorithm>

#include "ferry/core/error.h"
#include "ferry/core/shape.h"
#include "io/atomic_file.h"
#include "io/confined_path.h"
#include "io/mapped_file.h"
#include "io/offload_names.h"
#include "io/printable.h"
#include "io/tensor_bytes.h"

namespace ferry::io {
namespace {

std::filesystem::path dat_path(const std::filesystem::path& folder, const std::string& name) {
  return folder / (name + ".dat");
}

TensorInfo raw_info(const OffloadEntry& e) {
  return TensorInfo{.name = e.name, .dtype = *e.dtype, .shape = e.shape};
}

}  // namespace

void offload_weight(const at::Tensor& weight, const std::string& name,
                    const std::filesystem::path& folder, OffloadIndex& index) {
  FERRY_CHECK(is_plain_name(name), InvalidArgument,
              "cannot offload tensor '{}' to {}: its name must be a plain file name (no '/')",
              printable(name), folder.string());
  // Accelerate views bfloat16 as int16 for numpy; the bytes are the same, so they are written
  // as they are and the index says "bfloat16". A 0-dim tensor is one element either way.
  const at::Tensor cpu = weight.detach().to(c10::kCPU).contiguous();
  OffloadEntry entry{
      .name = name, .dtype = from_scalar_type(cpu.scalar_type()), .shape = cpu.sizes().vec()};
  std::filesystem::create_directories(folder);
  AtomicFile file(dat_path(folder, name), kPrivateFileMode);
  file.write(tensor_bytes(cpu));
  file.commit();
  auto it = std::find_if(index.begin(), index.end(),
                         [&](const OffloadEntry& e) { return e.name == name; });
  if (it == index.end()) {
    index.push_back(std::move(entry));
  } else {
    *it = std::move(entry);
  }
}

void offload_state_dict(const std::filesystem::path& folder,
                        const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  OffloadIndex index;
  for (const auto& [name, tensor] : tensors) offload_weight(tensor, name, folder, index);
  save_offload_index(index, folder);
}

std::shared_ptr<const OffloadFolder> OffloadFolder::open(const std::filesystem::path& folder) {
  // Note [Offload index paths]: an index read from disk names files inside its folder only.
  // The names are checked now; the symlink check waits for the file to be opened (data_path).
  OffloadIndex index = open_offload_index(folder);
  auto result = std::shared_ptr<OffloadFolder>(new OffloadFolder());
  result->folder_ = folder;
  result->index_ = std::move(index);
  result->confined_.resize(result->index_.size());
  for (std::size_t i = 0; i < result->index_.size(); ++i) {
    result->names_.push_back(result->index_[i].name);
    result->positions_.emplace(result->index_[i].name, i);
  }
  std::sort(result->names_.begin(), result->names_.end());
  return result;
}

std::shared_ptr<const OffloadFolder> OffloadFolder::from_index(const std::filesystem::path& folder,
                                                               OffloadIndex entries) {
  auto result = std::shared_ptr<OffloadFolder>(new OffloadFolder());
  result->folder_ = folder;
  result->trusted_ = true;
  result->index_ = std::move(entries);
  for (std::size_t i = 0; i < result->index_.size(); ++i) {
    const OffloadEntry& e = result->index_[i];
    FERRY_CHECK(is_plain_name(e.name), InvalidArgument,
                "offload entry '{}' for {}: its name must be a plain file name (no '/')",
                printable(e.name), folder.string());
    FERRY_CHECK(e.in_safetensors() || e.dtype.has_value(), InvalidArgument,
                "offload entry '{}' for {}: a raw .dat entry needs a dtype", printable(e.name),
                folder.string());
    FERRY_CHECK(result->positions_.emplace(e.name, i).second, InvalidArgument,
                "offload entry '{}' for {}: expected each name once, got it twice",
                printable(e.name), folder.string());
    result->names_.push_back(e.name);
  }
  std::sort(result->names_.begin(), result->names_.end());
  return result;
}

std::string OffloadFolder::description() const { return (folder_ / "index.json").string(); }

const OffloadEntry& OffloadFolder::require(std::string_view name) const {
  auto it = positions_.find(name);
  if (it == positions_.end()) throw missing(name);
  return index_[it->second];
}

std::filesystem::path OffloadFolder::data_path(const OffloadEntry& entry) const {
  const std::filesystem::path named =
      entry.in_safetensors() ? entry.safetensors_file : std::filesystem::path(entry.name + ".dat");
  if (trusted_) return named.is_absolute() ? named : folder_ / named;
  // Note [Offload index paths]
  // index.json is read from disk, so it is input like any file: what it names must be inside
  // the folder, with symlinks resolved, or a crafted index (or a .dat linked to /etc/passwd)
  // reads any file the user can. Indexes ferry builds itself are trusted (from_index). Each
  // entry is checked once (resolving a path costs a syscall per component, and disk weights
  // are loaded at every forward); the folder must not change while it is used.
  const auto position = static_cast<std::size_t>(&entry - index_.data());
  FERRY_ASSERT(position < index_.size(), "entry '{}' is not one of {}", entry.name, description());
  {
    std::lock_guard lock(mutex_);
    if (!confined_[position].empty()) return confined_[position];
  }
  if (auto path = confined_path(folder_, named.native(), Symlinks::kConfine)) {
    std::lock_guard lock(mutex_);
    return confined_[position] = *path;
  }
  const std::string index = description();
  throw CorruptFile(
      fmt::format("tensor '{}' in {}: {} resolves outside the offload folder {}: expected a file "
                  "inside it (a symlink out of the folder is refused)",
                  printable(entry.name), index, printable(named.native()), folder_.string()),
      ErrorFields{.path = entry.name,
                  .file = index,
                  .expected = "a file inside the offload folder",
                  .actual = printable(named.native())});
}

std::shared_ptr<const SafetensorsFile> OffloadFolder::safetensors(const OffloadEntry& entry) const {
  const auto path = data_path(entry);
  {
    std::lock_guard lock(mutex_);
    if (auto it = files_.find(path); it != files_.end()) return it->second;
  }
  auto file = SafetensorsFile::open(path);
  const std::string& weight = entry.weight_name.empty() ? entry.name : entry.weight_name;
  if (file->entry(weight) == nullptr) {
    throw CorruptFile(
        fmt::format("tensor '{}' in {}: points to '{}' in {}, which does not contain it: "
                    "expected a tensor '{}', got none",
                    printable(entry.name), description(), printable(weight), path.string(),
                    printable(weight)),
        ErrorFields{.path = entry.name,
                    .file = description(),
                    .expected = weight,
                    .actual = "no such tensor"});
  }
  std::lock_guard lock(mutex_);
  return files_.emplace(path, std::move(file)).first->second;
}

std::optional<TensorInfo> OffloadFolder::find(std::string_view name) const {
  auto it = positions_.find(name);
  if (it == positions_.end()) return std::nullopt;
  const OffloadEntry& e = index_[it->second];
  if (!e.in_safetensors()) return raw_info(e);
  auto file = safetensors(e);
  TensorInfo info = file->entry(e.weight_name.empty() ? e.name : e.weight_name)->info;
  info.name = e.name;
  if (e.dtype) info.dtype = *e.dtype;
  return info;
}

at::Tensor OffloadFolder::load(std::string_view name, const LoadOptions& options) const {
  const OffloadEntry& e = require(name);
  if (e.in_safetensors()) {
    auto file = safetensors(e);
    LoadOptions converted = options;
    if (!converted.dtype) converted.dtype = e.dtype;
    const std::string& weight = e.weight_name.empty() ? e.name : e.weight_name;
    return file->load(weight, converted);
  }
  const TensorInfo info = raw_info(e);
  const auto path = data_path(e);
  if (info.size_bytes() == 0) {
    // Nothing to read (numpy cannot even map an empty file).
    return tensor_from_bytes({}, info, nullptr, options, path.string());
  }
  auto mapping = MappedFile::open(path);
  if (mapping->size_bytes() != info.size_bytes()) {
    throw CorruptFile(
        fmt::format("tensor '{}' in {}: size does not match index.json ({} {}): expected {} "
                    "bytes, got {}",
                    printable(e.name), path.string(), offload_dtype_name(info.dtype),
                    shape_string(info.shape), info.size_bytes(), mapping->size_bytes()),
        ErrorFields{.path = e.name,
                    .file = path.string(),
                    .expected = std::to_string(info.size_bytes()),
                    .actual = std::to_string(mapping->size_bytes())});
  }
  return load_from_file(mapping, 0, info, options);
}

std::optional<FileExtent> OffloadFolder::extent(std::string_view name) const {
  const OffloadEntry& e = require(name);
  if (e.in_safetensors()) {
    // The file's extent as it is: its stored dtype, not the entry's target dtype.
    return safetensors(e)->extent(e.weight_name.empty() ? e.name : e.weight_name);
  }
  const TensorInfo info = raw_info(e);
  return FileExtent{.file = data_path(e),
                    .offset = 0,
                    .length = info.size_bytes(),
                    .dtype = info.dtype,
                    .shape = info.shape};
}

std::filesystem::path OffloadFolder::file_of(std::string_view name) const {
  const OffloadEntry& e = require(name);
  return data_path(e);
}

}  // namespace ferry::io
