#pragma once
// The type-erased view through which hooks reach the tensors of a call's arguments and outputs,
// while forward signatures stay typed C++ (Note [Hook entry point] in module.h).

#include <ATen/ATen.h>

#include <optional>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <vector>

namespace ferry::nn {

class TensorView;

// A user struct exposes its tensors to hooks by defining
//   void visit_tensors(ferry::nn::TensorView& view) { view.visit(field, "field"); ... }
// Keys name the fields, so hooks can leave some of them where they are (skip_keys).
template <class T>
concept VisitsTensors = requires(T& value, TensorView& view) {
  value.visit_tensors(view);
};

namespace detail {
template <class T>
struct IsOptional : std::false_type {};
template <class T>
struct IsOptional<std::optional<T>> : std::true_type {};
template <class T>
struct IsVector : std::false_type {};
template <class T, class A>
struct IsVector<std::vector<T, A>> : std::true_type {};
template <class T>
struct IsTuple : std::false_type {};
template <class... T>
struct IsTuple<std::tuple<T...>> : std::true_type {};
template <class A, class B>
struct IsTuple<std::pair<A, B>> : std::true_type {};
}  // namespace detail

// Pointers to the defined tensors inside one call's values, depth first, in argument order.
// A hook may replace a tensor through its pointer (e.g. move it to the execution device); the
// view is only valid during the hook call that received it.
class TensorView {
 public:
  struct Field {
    at::Tensor* tensor;    // the tensor inside the call's value; never null
    std::string_view key;  // name of the struct field it came from; empty for positional values
  };

  // Collects the tensors of `value`: a tensor, optional, vector, tuple/pair (recursively), or a
  // struct that VisitsTensors. Other types (numbers, strings, pointers) hold no visible tensors.
  template <class T>
  void visit(T& value, std::string_view key = {}) {
    using U = std::remove_cv_t<T>;
    if constexpr (std::is_same_v<U, at::Tensor>) {
      if (value.defined()) fields_.push_back({&value, key});
    } else if constexpr (detail::IsOptional<U>::value) {
      if (value.has_value()) visit(*value, key);
    } else if constexpr (detail::IsVector<U>::value) {
      for (auto& element : value) visit(element, key);
    } else if constexpr (detail::IsTuple<U>::value) {
      std::apply([&](auto&... elements) { (visit(elements, key), ...); }, value);
    } else if constexpr (VisitsTensors<U>) {
      value.visit_tensors(*this);
    }
  }

  std::vector<Field>& fields() noexcept { return fields_; }
  const std::vector<Field>& fields() const noexcept { return fields_; }
  std::size_t size() const noexcept { return fields_.size(); }
  bool empty() const noexcept { return fields_.empty(); }

 private:
  std::vector<Field> fields_;
};

}  // namespace ferry::nn
