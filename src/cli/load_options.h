#pragma once
// The load options the placement flags mean (engine side: models::LoadModelOptions holds
// LibTorch types).

#include <cstdint>

#include "cli/placement_flags.h"
#include "ferry/models/registry.h"
#include "ferry/models/run_shape.h"

namespace ferry::cli {

// The load options the flags mean, for prompts of at most `prompt_tokens` tokens (the shape's
// prompt allowance is max(that, models::kPromptAllowance)).
models::LoadModelOptions load_options(const PlacementFlags& flags, std::int64_t prompt_tokens);

}  // namespace ferry::cli
