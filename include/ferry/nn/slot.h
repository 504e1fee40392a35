#pragma once
// Slots: the place a parameter or buffer lives. Forward code reads a module's tensors through its
// slots on every call, so replacing what a slot holds (meta → CPU → GPU → meta) is how weights
// move. Tied parameters are one slot registered under several names.

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <string_view>

namespace ferry::nn {

class Slot {
 public:
  explicit Slot(at::Tensor tensor) : tensor_(std::move(tensor)) {}

  const at::Tensor& tensor() const noexcept { return tensor_; }

  // Replaces the tensor with one of the same shape on any device and of any dtype; `path` names
  // the slot in the ShapeMismatch error thrown otherwise. Not thread-safe against a concurrent
  // forward of the owning module.
  void assign(at::Tensor tensor, std::string_view path);

 private:
  at::Tensor tensor_;
};

using SlotPtr = std::shared_ptr<Slot>;

enum class TensorKind : unsigned char { kParameter, kBuffer };

// One registration of a tensor in a module: its local name and the slot it reads.
struct TensorEntry {
  std::string name;  // local name, e.g. "weight"
  SlotPtr slot;      // shared with other entries when tied
  TensorKind kind = TensorKind::kParameter;
  bool persistent = true;      // buffers only: false keeps it out of the state dict
  bool requires_grad = false;  // parameters only; applied to every tensor the slot receives

  bool is_buffer() const noexcept { return kind == TensorKind::kBuffer; }
};

// A layer's handle on one of its own tensors. It reads through the registration, so it sees both
// slot replacements and retying (a registration switched to another slot).
class TensorRef {
 public:
  TensorRef() = default;
  explicit TensorRef(const TensorEntry* entry) : entry_(entry) {}

  const at::Tensor& get() const { return entry_->slot->tensor(); }
  const at::Tensor& operator*() const { return get(); }
  const at::Tensor* operator->() const { return &get(); }
  // False for an optional tensor that was not registered (e.g. a Linear without bias).
  explicit operator bool() const noexcept { return entry_ != nullptr; }

 private:
  const TensorEntry* entry_ = nullptr;
};

}  // namespace ferry::nn
