#include "ferry/nn/containers.h"

namespace ferry::nn {

at::Tensor Sequential::forward(at::Tensor x) {
  for (const auto& call : calls_) x = call(std::move(x));
  return x;
}

Module* ModuleList::checked(std::size_t i) const {
  FERRY_CHECK(i < children().size(), InvalidArgument, "ModuleList index {} out of range (size {})",
              i, children().size());
  return children()[i].second.get();
}

Module* ModuleDict::checked(std::string_view key) const {
  Module* m = child(key);
  if (m == nullptr) {
    throw MissingTensor(fmt::format("ModuleDict has no key '{}'", key),
                        ErrorFields{.path = std::string(key)});
  }
  return m;
}

}  // namespace ferry::nn
