#pragma once
// GPT-2 (model_type "gpt2"): transformers' GPT2LMHeadModel module tree — transformer.wte,
// transformer.wpe (learned positions), transformer.h.N.{ln_1, attn.{c_attn, c_proj}, ln_2,
// mlp.{c_fc, c_proj}} with Conv1D layers ([in, out] weights), transformer.ln_f, and lm_head tied
// to wte. Checkpoints saved by transformers' GPT2LMHeadModel load as they are; OpenAI's original
// files (names without "transformer.") need renaming first.

#include <memory>

#include "ferry/models/causal_lm.h"
#include "ferry/models/checkpoint_layout.h"

namespace ferry::models {

// Builds the model for `config` with parameters of `dtype`, on the device of the current
// nn::InitOnDevice guard. The decoder block's class is "GPT2Block".
std::shared_ptr<CausalLM> make_gpt2(const ModelConfig& config, at::ScalarType dtype);
// GPT-2's checkpoint names; the causal-mask buffers attn.bias and attn.masked_bias that
// transformers saved are rebuilt here and dropped.
CheckpointLayout gpt2_checkpoint_layout();

}  // namespace ferry::models
