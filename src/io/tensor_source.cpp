#include "ferry/io/tensor_source.h"

#include <algorithm>

#include "io/tensor_bytes.h"

namespace ferry::io {
namespace {

// Names of `parent` under `prefix`, stripped. The parent's names are sorted, so they form one
// contiguous run starting at lower_bound(prefix).
class PrefixedSource final : public TensorSource {
 public:
  PrefixedSource(std::shared_ptr<const TensorSource> parent, std::string prefix)
      : parent_(std::move(parent)), prefix_(std::move(prefix)) {
    const auto& all = parent_->names();
    for (auto it = std::lower_bound(all.begin(), all.end(), prefix_);
         it != all.end() && it->starts_with(prefix_); ++it) {
      names_.push_back(it->substr(prefix_.size()));
    }
  }

  const std::vector<std::string>& names() const override { return names_; }
  std::optional<TensorInfo> find(std::string_view name) const override {
    auto info = parent_->find(full(name));
    if (info) info->name = std::string(name);
    return info;
  }
  at::Tensor load(std::string_view name, const LoadOptions& options) const override {
    if (!parent_->contains(full(name))) throw missing(name);
    return parent_->load(full(name), options);
  }
  std::filesystem::path file_of(std::string_view name) const override {
    if (!parent_->contains(full(name))) throw missing(name);
    return parent_->file_of(full(name));
  }
  std::optional<FileExtent> extent(std::string_view name) const override {
    if (!parent_->contains(full(name))) throw missing(name);
    return parent_->extent(full(name));
  }
  std::string description() const override {
    return fmt::format("{} (prefix '{}')", parent_->description(), prefix_);
  }

 private:
  std::string full(std::string_view name) const { return prefix_ + std::string(name); }

  std::shared_ptr<const TensorSource> parent_;
  std::string prefix_;
  std::vector<std::string> names_;
};

class MemorySource final : public TensorSource {
 public:
  explicit MemorySource(std::map<std::string, at::Tensor> tensors) : tensors_(std::move(tensors)) {
    for (const auto& [name, tensor] : tensors_) {
      names_.push_back(name);
      infos_.push_back(TensorInfo{.name = name,
                                  .dtype = from_scalar_type(tensor.scalar_type()),
                                  .shape = tensor.sizes().vec()});
    }
  }

  const std::vector<std::string>& names() const override { return names_; }
  std::optional<TensorInfo> find(std::string_view name) const override {
    auto it = std::lower_bound(names_.begin(), names_.end(), name);
    if (it == names_.end() || *it != name) return std::nullopt;
    return infos_[static_cast<std::size_t>(it - names_.begin())];
  }
  at::Tensor load(std::string_view name, const LoadOptions& options) const override {
    auto it = tensors_.find(std::string(name));
    if (it == tensors_.end()) throw missing(name);
    return convert(it->second, options);
  }
  std::filesystem::path file_of(std::string_view name) const override {
    if (!contains(name)) throw missing(name);
    return {};
  }
  std::string description() const override { return "<memory>"; }

 private:
  std::map<std::string, at::Tensor> tensors_;
  std::vector<std::string> names_;  // the map's keys, sorted like it
  std::vector<TensorInfo> infos_;
};

}  // namespace

TensorInfo TensorSource::info(std::string_view name) const {
  if (auto i = find(name)) return *std::move(i);
  throw missing(name);
}

std::optional<FileExtent> TensorSource::extent(std::string_view name) const {
  if (!contains(name)) throw missing(name);
  return std::nullopt;
}

std::uint64_t TensorSource::total_bytes() const {
  std::uint64_t total = 0;
  for (const std::string& name : names()) total += info(name).size_bytes();
  return total;
}

std::shared_ptr<const TensorSource> TensorSource::prefixed(std::string prefix) const {
  auto self = weak_from_this().lock();
  FERRY_ASSERT(self != nullptr, "prefixed() needs a source owned by a std::shared_ptr ({})",
               description());
  return std::make_shared<PrefixedSource>(std::move(self), std::move(prefix));
}

MissingTensor TensorSource::missing(std::string_view name) const {
  return MissingTensor(fmt::format("tensor '{}' not found in {}", name, description()),
                       ErrorFields{.path = std::string(name), .file = description()});
}

std::shared_ptr<const TensorSource> make_memory_source(std::map<std::string, at::Tensor> tensors) {
  return std::make_shared<MemorySource>(std::move(tensors));
}

}  // namespace ferry::io
