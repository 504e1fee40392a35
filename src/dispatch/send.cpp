#include "ferry/dispatch/send.h"

#include <algorithm>

#include "ferry/core/devices.h"

namespace ferry::dispatch {

void send_to_device(nn::TensorView& view, ExecutionDevice device,
                    const std::vector<std::string>& skip_keys) {
  for (auto& field : view.fields()) {
    if (!field.key.empty() &&
        std::find(skip_keys.begin(), skip_keys.end(), field.key) != skip_keys.end()) {
      continue;
    }
    if (field.tensor->is_meta()) continue;
    *field.tensor = move_to(*field.tensor, device);
  }
}

std::optional<ExecutionDevice> find_device(const nn::TensorView& view) {
  for (const auto& field : view.fields()) {
    if (auto p = placement_of(*field.tensor)) return p;
  }
  return std::nullopt;
}

}  // namespace ferry::dispatch
