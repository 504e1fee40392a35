#include "ferry/nn/module.h"

#include <fmt/format.h>

#include <algorithm>
#include <unordered_set>

#include "ferry/core/error.h"
#include "ferry/nn/init.h"

namespace ferry::nn {
namespace {

std::string join_name(const std::string& prefix, std::string_view name) {
  if (prefix.empty()) return std::string(name);
  std::string out;
  out.reserve(prefix.size() + 1 + name.size());
  out.append(prefix).append(".").append(name);
  return out;
}

// Pre-order traversal with full names, children in registration order. With remove_duplicate
// every module is visited once, under its first name (PyTorch's named_modules); without it, a
// module registered under several names (Sequential(layer, layer), a reused block) is visited
// under each of them, as PyTorch's named_modules(remove_duplicate=False) and state_dict do.
// Note [Module cycles]: a module that is its own descendant would make a walk under every name
// endless; every walk reports it as InvalidArgument naming the path that closes the cycle.
template <class Fn>
void walk_modules(Module& root, bool recurse, bool remove_duplicate, Fn&& fn) {
  std::unordered_set<const Module*> seen;
  std::vector<const Module*> ancestors;
  const auto visit = [&](const auto& self, Module& m, const std::string& name) -> void {
    if (remove_duplicate && !seen.insert(&m).second) return;
    fn(name, m);
    if (!recurse) return;
    ancestors.push_back(&m);
    for (const auto& [child_name, child] : m.children()) {
      const std::string path = join_name(name, child_name);
      FERRY_CHECK(std::find(ancestors.begin(), ancestors.end(), child.get()) == ancestors.end(),
                  InvalidArgument,
                  "module '{}' ({}) is one of its own ancestors: a module tree has no cycles", path,
                  child->class_name());
      self(self, *child, path);
    }
    ancestors.pop_back();
  };
  visit(visit, root, "");
}

}  // namespace

Module::Module(std::string class_name) : class_name_(std::move(class_name)) {}

Module::~Module() = default;

void Module::check_new_name(const std::string& name) const {
  FERRY_CHECK(!name.empty() && name.find('.') == std::string::npos, InvalidArgument,
              "invalid name '{}' in module {}: names are non-empty and contain no '.'", name,
              class_name_);
  FERRY_CHECK(child_index_.find(name) == child_index_.end() && find_entry(name) == nullptr,
              InvalidArgument, "name '{}' is already used in module {}", name, class_name_);
}

void Module::add_child(std::string name, std::shared_ptr<Module> child) {
  FERRY_CHECK(child != nullptr, InvalidArgument, "child '{}' of module {} is null", name,
              class_name_);
  check_new_name(name);
  child_index_.emplace(name, children_.size());
  children_.emplace_back(std::move(name), std::move(child));
}

Module* Module::child(std::string_view name) const {
  auto it = child_index_.find(std::string(name));
  return it == child_index_.end() ? nullptr : children_[it->second].second.get();
}

Module& Module::submodule(std::string_view path) {
  Module* current = this;
  std::string_view rest = path;
  while (!rest.empty()) {
    const std::size_t dot = rest.find('.');
    const std::string_view part = rest.substr(0, dot);
    Module* next = current->child(part);
    if (next == nullptr) {
      throw MissingTensor(fmt::format("module '{}' not found: {} has no child '{}'", path,
                                      current->class_name(), part),
                          ErrorFields{.path = std::string(path)});
    }
    current = next;
    rest = dot == std::string_view::npos ? std::string_view() : rest.substr(dot + 1);
  }
  return *current;
}

TensorEntry* Module::find_entry(std::string_view name) const {
  for (const auto& entry : tensors_) {
    if (entry->name == name) return entry.get();
  }
  return nullptr;
}

TensorRef Module::add_entry(std::string name, at::Tensor tensor, TensorKind kind, bool persistent,
                            bool requires_grad) {
  check_new_name(name);
  FERRY_CHECK(tensor.defined(), InvalidArgument, "tensor '{}' of module {} is undefined", name,
              class_name_);
  const InitContext& context = current_init_context();
  if (context.device && (kind == TensorKind::kParameter || context.include_buffers)) {
    tensor = place_on(tensor, *context.device);
  }
  if (kind == TensorKind::kParameter && requires_grad) tensor.set_requires_grad(true);
  auto entry = std::make_unique<TensorEntry>(TensorEntry{.name = std::move(name),
                                                         .slot = std::make_shared<Slot>(tensor),
                                                         .kind = kind,
                                                         .persistent = persistent,
                                                         .requires_grad = requires_grad});
  tensors_.push_back(std::move(entry));
  return TensorRef(tensors_.back().get());
}

TensorRef Module::register_parameter(std::string name, at::Tensor tensor, bool requires_grad) {
  return add_entry(std::move(name), std::move(tensor), TensorKind::kParameter,
                   /*persistent=*/true, requires_grad);
}

TensorRef Module::register_buffer(std::string name, at::Tensor tensor, bool persistent) {
  return add_entry(std::move(name), std::move(tensor), TensorKind::kBuffer, persistent,
                   /*requires_grad=*/false);
}

TensorRef Module::register_tied_parameter(std::string name, SlotPtr slot) {
  check_new_name(name);
  FERRY_CHECK(slot != nullptr, InvalidArgument, "tied parameter '{}' of module {} has no slot",
              name, class_name_);
  tensors_.push_back(
      std::make_unique<TensorEntry>(TensorEntry{.name = std::move(name), .slot = std::move(slot)}));
  return TensorRef(tensors_.back().get());
}

namespace {
at::Tensor new_tensor(at::IntArrayRef shape, at::ScalarType dtype, bool on_context_device,
                      const std::function<void(at::Tensor&)>& init) {
  const InitContext& context = current_init_context();
  const c10::Device device =
      on_context_device && context.device ? *context.device : c10::Device(c10::kCPU);
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype).device(device));
  if (!device.is_meta() && init) init(t);
  return t;
}
}  // namespace

TensorRef Module::new_parameter(std::string name, at::IntArrayRef shape, at::ScalarType dtype,
                                const std::function<void(at::Tensor&)>& init) {
  return register_parameter(std::move(name), new_tensor(shape, dtype, true, init));
}

TensorRef Module::new_buffer(std::string name, at::IntArrayRef shape, at::ScalarType dtype,
                             const std::function<void(at::Tensor&)>& init, bool persistent) {
  const bool on_device = current_init_context().include_buffers;
  return register_buffer(std::move(name), new_tensor(shape, dtype, on_device, init), persistent);
}

std::vector<NamedTensor> Module::named_parameters(ParameterWalk walk) {
  std::vector<NamedTensor> out;
  std::unordered_set<const Slot*> seen;
  walk_modules(*this, walk.recurse, walk.remove_duplicate,
               [&](const std::string& prefix, Module& m) {
                 for (const auto& entry : m.tensors_) {
                   if (entry->is_buffer()) continue;
                   if (walk.remove_duplicate && !seen.insert(entry->slot.get()).second) continue;
                   out.push_back({join_name(prefix, entry->name), &m, entry.get()});
                 }
               });
  return out;
}

std::vector<NamedTensor> Module::named_buffers(BufferWalk walk) {
  std::vector<NamedTensor> out;
  std::unordered_set<const Slot*> seen;
  walk_modules(*this, walk.recurse, walk.remove_duplicate,
               [&](const std::string& prefix, Module& m) {
                 for (const auto& entry : m.tensors_) {
                   if (!entry->is_buffer()) continue;
                   if (walk.persistent_only && !entry->persistent) continue;
                   if (walk.remove_duplicate && !seen.insert(entry->slot.get()).second) continue;
                   out.push_back({join_name(prefix, entry->name), &m, entry.get()});
                 }
               });
  return out;
}

std::vector<NamedModule> Module::named_modules(ModuleWalk walk) {
  std::vector<NamedModule> out;
  walk_modules(*this, /*recurse=*/true, walk.remove_duplicate,
               [&](const std::string& name, Module& m) {
                 out.push_back({name, &m});
               });
  return out;
}

std::vector<NamedTensor> Module::named_module_tensors(bool include_buffers, bool recurse,
                                                      bool remove_non_persistent) {
  std::vector<NamedTensor> out = named_parameters({.recurse = recurse});
  if (include_buffers) {
    std::vector<NamedTensor> buffers =
        named_buffers({.recurse = recurse, .persistent_only = remove_non_persistent});
    out.insert(out.end(), std::make_move_iterator(buffers.begin()),
               std::make_move_iterator(buffers.end()));
  }
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> Module::state_dict(StateDictOptions options) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  std::unordered_set<const Slot*> seen;
  // Every name of every module, as PyTorch's state_dict (which recurses into every child); a
  // shared module's tensors are then dropped as duplicates unless keep_tied.
  walk_modules(*this, /*recurse=*/true, /*remove_duplicate=*/false,
               [&](const std::string& prefix, Module& m) {
                 // PyTorch order: a module's parameters, then its persistent buffers, then its
                 // children.
                 for (TensorKind kind : {TensorKind::kParameter, TensorKind::kBuffer}) {
                   for (const auto& entry : m.tensors_) {
                     if (entry->kind != kind || (entry->is_buffer() && !entry->persistent))
                       continue;
                     if (!options.keep_tied && !seen.insert(entry->slot.get()).second) continue;
                     out.emplace_back(join_name(prefix, entry->name), entry->slot->tensor());
                   }
                 }
               });
  return out;
}

NamedTensor Module::find_tensor(std::string_view path) {
  const std::size_t dot = path.rfind('.');
  const std::string_view owner_path =
      dot == std::string_view::npos ? std::string_view() : path.substr(0, dot);
  const std::string_view local = dot == std::string_view::npos ? path : path.substr(dot + 1);
  Module* owner = nullptr;
  try {
    owner = &submodule(owner_path);
  } catch (const MissingTensor&) {
    owner = nullptr;
  }
  TensorEntry* entry = owner == nullptr ? nullptr : owner->find_entry(local);
  if (entry == nullptr) {
    throw MissingTensor(fmt::format("tensor '{}' not found in module {}", path, class_name_),
                        ErrorFields{.path = std::string(path)});
  }
  return {std::string(path), owner, entry};
}

void Module::set_tensor(std::string_view path, at::Tensor tensor) {
  NamedTensor found = find_tensor(path);
  if (found.entry->requires_grad && tensor.is_floating_point() && !tensor.requires_grad()) {
    tensor = tensor.detach().set_requires_grad(true);
  }
  found.entry->slot->assign(std::move(tensor), path);
}

void Module::set_slot(std::string_view path, SlotPtr slot) {
  FERRY_CHECK(slot != nullptr, InvalidArgument, "null slot for tensor '{}'", path);
  NamedTensor found = find_tensor(path);
  if (found.entry->slot == slot) return;
  if (slot->tensor().sizes() != found.tensor().sizes()) {
    found.entry->slot->assign(slot->tensor(), path);  // throws the ShapeMismatch
  }
  found.entry->slot = std::move(slot);
}

}  // namespace ferry::nn
