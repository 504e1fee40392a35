#include "ferry/dispatch/weights_map.h"

#include <fmt/format.h>

#include <algorithm>
#include <unordered_map>

#include "ferry/core/devices.h"

namespace ferry::dispatch {
namespace {

class CombinedSource final : public io::TensorSource {
 public:
  explicit CombinedSource(std::vector<WeightsMap> sources) : sources_(std::move(sources)) {
    for (std::size_t i = 0; i < sources_.size(); ++i) {
      for (const std::string& name : sources_[i]->names()) {
        if (owner_.emplace(name, i).second) names_.push_back(name);
      }
    }
    std::sort(names_.begin(), names_.end());
  }

  const std::vector<std::string>& names() const override { return names_; }
  std::optional<TensorInfo> find(std::string_view name) const override {
    const io::TensorSource* s = source_of(name);
    return s == nullptr ? std::nullopt : s->find(name);
  }
  at::Tensor load(std::string_view name, const io::LoadOptions& options) const override {
    const io::TensorSource* s = source_of(name);
    if (s == nullptr) throw missing(name);
    return s->load(name, options);
  }
  std::filesystem::path file_of(std::string_view name) const override {
    const io::TensorSource* s = source_of(name);
    if (s == nullptr) throw missing(name);
    return s->file_of(name);
  }
  std::optional<io::FileExtent> extent(std::string_view name) const override {
    const io::TensorSource* s = source_of(name);
    if (s == nullptr) throw missing(name);
    return s->extent(name);
  }
  std::string description() const override {
    std::vector<std::string> parts;
    for (const auto& s : sources_) parts.push_back(s->description());
    return fmt::format("weights map [{}]", fmt::join(parts, " + "));
  }

 private:
  const io::TensorSource* source_of(std::string_view name) const {
    auto it = owner_.find(std::string(name));
    return it == owner_.end() ? nullptr : sources_[it->second].get();
  }

  std::vector<WeightsMap> sources_;
  std::unordered_map<std::string, std::size_t> owner_;
  std::vector<std::string> names_;
};

// Names that read another name of the same source.
class AliasSource final : public io::TensorSource {
 public:
  AliasSource(WeightsMap base, std::unordered_map<std::string, std::string> aliases)
      : base_(std::move(base)), aliases_(std::move(aliases)) {
    names_ = base_->names();
    for (const auto& [alias, target] : aliases_) names_.push_back(alias);
    std::sort(names_.begin(), names_.end());
  }
  const std::vector<std::string>& names() const override { return names_; }
  std::optional<TensorInfo> find(std::string_view name) const override {
    auto info = base_->find(resolve(name));
    if (info) info->name = std::string(name);
    return info;
  }
  at::Tensor load(std::string_view name, const io::LoadOptions& options) const override {
    return base_->load(resolve(name), options);
  }
  std::filesystem::path file_of(std::string_view name) const override {
    return base_->file_of(resolve(name));
  }
  std::optional<io::FileExtent> extent(std::string_view name) const override {
    return base_->extent(resolve(name));
  }
  std::string description() const override { return base_->description(); }

 private:
  std::string resolve(std::string_view name) const {
    auto it = aliases_.find(std::string(name));
    return it == aliases_.end() ? std::string(name) : it->second;
  }
  WeightsMap base_;
  std::unordered_map<std::string, std::string> aliases_;
  std::vector<std::string> names_;
};

// Some names of a source, which also keeps an owner alive (a workspace its files lie in).
class SubsetSource final : public io::TensorSource {
 public:
  SubsetSource(WeightsMap base, std::vector<std::string> names, std::shared_ptr<const void> owner)
      : base_(std::move(base)), names_(std::move(names)), owner_(std::move(owner)) {
    std::sort(names_.begin(), names_.end());
    names_.erase(std::unique(names_.begin(), names_.end()), names_.end());
  }
  const std::vector<std::string>& names() const override { return names_; }
  std::optional<TensorInfo> find(std::string_view name) const override {
    return has(name) ? base_->find(name) : std::nullopt;
  }
  at::Tensor load(std::string_view name, const io::LoadOptions& options) const override {
    if (!has(name)) throw missing(name);
    return base_->load(name, options);
  }
  std::filesystem::path file_of(std::string_view name) const override {
    if (!has(name)) throw missing(name);
    return base_->file_of(name);
  }
  std::optional<io::FileExtent> extent(std::string_view name) const override {
    if (!has(name)) throw missing(name);
    return base_->extent(name);
  }
  std::string description() const override { return base_->description(); }

 private:
  bool has(std::string_view name) const {
    return std::binary_search(names_.begin(), names_.end(), name, std::less<>());
  }
  WeightsMap base_;
  std::vector<std::string> names_;  // sorted, unique
  std::shared_ptr<const void> owner_;
};

bool belongs(const std::string& name, const std::string& module) {
  if (module.empty() || name == module) return true;
  return name.size() > module.size() && name.starts_with(module) && name[module.size()] == '.';
}

}  // namespace

WeightsMap combine_weights(std::vector<WeightsMap> sources) {
  std::erase(sources, nullptr);
  if (sources.size() == 1) return sources.front();
  return std::make_shared<CombinedSource>(std::move(sources));
}

std::vector<std::pair<std::string, at::Tensor>> extract_submodules_state_dict(
    const std::vector<std::pair<std::string, at::Tensor>>& state,
    const std::vector<std::string>& modules) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& [name, tensor] : state) {
    if (std::any_of(modules.begin(), modules.end(),
                    [&](const std::string& m) { return belongs(name, m); })) {
      out.emplace_back(name, tensor);
    }
  }
  return out;
}

WeightsMap with_tied_aliases(WeightsMap weights,
                             const std::vector<std::vector<std::string>>& tied_groups) {
  if (!weights) return weights;
  std::unordered_map<std::string, std::string> aliases;
  for (const auto& group : tied_groups) {
    auto present = std::find_if(group.begin(), group.end(),
                                [&](const std::string& n) { return weights->contains(n); });
    if (present == group.end()) continue;
    for (const std::string& n : group) {
      if (!weights->contains(n)) aliases.emplace(n, *present);
    }
  }
  if (aliases.empty()) return weights;
  return std::make_shared<AliasSource>(std::move(weights), std::move(aliases));
}

WeightsMap select_weights(WeightsMap source, std::vector<std::string> names,
                          std::shared_ptr<const void> owner) {
  if (!source) return source;
  for (const std::string& n : names) {
    if (!source->contains(n)) throw MissingTensor(fmt::format("tensor '{}' is not in {}", n,
                                                              source->description()),
                                                  ErrorFields{.path = n,
                                                              .file = source->description()});
  }
  return std::make_shared<SubsetSource>(std::move(source), std::move(names), std::move(owner));
}

WeightsMap cpu_weights(const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  std::map<std::string, at::Tensor> state;
  for (const auto& [name, t] : tensors) {
    if (!t.is_meta()) state.emplace(name, move_to(t, ExecutionDevice::cpu()));
  }
  return io::make_memory_source(std::move(state));
}

}  // namespace ferry::dispatch
