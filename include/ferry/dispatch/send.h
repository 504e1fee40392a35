#pragma once
// Moving a call's tensors between devices (Accelerate's send_to_device / find_device).

#include <optional>
#include <string>
#include <vector>

#include "ferry/core/execution_device.h"
#include "ferry/nn/tensor_view.h"

namespace ferry::dispatch {

// Moves every tensor of `view` to `device` (see ferry::move_to), except those whose key is in
// `skip_keys`.
void send_to_device(nn::TensorView& view, ExecutionDevice device,
                    const std::vector<std::string>& skip_keys = {});

// Where the first tensor of `view` lives (depth first); nullopt when it has none with data.
std::optional<ExecutionDevice> find_device(const nn::TensorView& view);

}  // namespace ferry::dispatch
