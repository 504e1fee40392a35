#pragma once
// Containers: Sequential (a chain of tensor → tensor modules), ModuleList and ModuleDict.
// Children are named "0", "1", ... or by key, as in PyTorch, so paths match checkpoint names.

#include <concepts>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ferry/core/error.h"
#include "ferry/nn/module.h"

namespace ferry::nn {

// A module callable on one tensor and returning one.
template <class M>
concept TensorModule = std::derived_from<M, Module> && requires(M& m, at::Tensor x) {
  { m(x) } -> std::convertible_to<at::Tensor>;
};

class Sequential : public Callable<Sequential> {
 public:
  Sequential() : Callable("Sequential") {}

  // Appends `module` under the next index; calling the Sequential calls it through its own hook.
  template <TensorModule M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> module) {
    register_module(std::to_string(calls_.size()), module);
    M* raw = module.get();
    calls_.emplace_back([raw](at::Tensor x) -> at::Tensor { return (*raw)(std::move(x)); });
    return module;
  }
  std::size_t size() const noexcept { return calls_.size(); }

 private:
  friend class Callable<Sequential>;
  at::Tensor forward(at::Tensor x);
  std::vector<std::function<at::Tensor(at::Tensor)>> calls_;
};

class ModuleList : public Module {
 public:
  ModuleList() : Module("ModuleList") {}

  template <class M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> module) {
    register_module(std::to_string(children().size()), module);
    return module;
  }
  std::size_t size() const noexcept { return children().size(); }
  Module& operator[](std::size_t i) const { return *checked(i); }
  // The i-th module as its concrete type; throws InvalidArgument on a wrong type or index.
  template <class M>
  M& at(std::size_t i) const {
    auto* typed = dynamic_cast<M*>(checked(i));
    FERRY_CHECK(typed != nullptr, InvalidArgument, "ModuleList[{}] is a {}, not the type asked for",
                i, checked(i)->class_name());
    return *typed;
  }

 private:
  Module* checked(std::size_t i) const;
};

class ModuleDict : public Module {
 public:
  ModuleDict() : Module("ModuleDict") {}

  template <class M>
  std::shared_ptr<M> insert(std::string key, std::shared_ptr<M> module) {
    return register_module(std::move(key), std::move(module));
  }
  bool contains(std::string_view key) const { return child(key) != nullptr; }
  // The module at `key` as its concrete type; throws MissingTensor / InvalidArgument.
  template <class M>
  M& at(std::string_view key) const {
    auto* typed = dynamic_cast<M*>(checked(key));
    FERRY_CHECK(typed != nullptr, InvalidArgument,
                "ModuleDict['{}'] is a {}, not the type asked for", key,
                checked(key)->class_name());
    return *typed;
  }

 private:
  Module* checked(std::string_view key) const;
};

}  // namespace ferry::nn
