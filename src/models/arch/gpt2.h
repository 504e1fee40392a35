#pragma once
// GPT-2 (model_type "gpt2"): transformers' GPT2LMHeadModel module tree — transformer.wte,
// transformer.wpe (learned positions), transformer.h.N.{ln_1, attn.{c_attn, c_proj}, ln_2,
// mlp.{c_fc, c_proj}} with Conv1D layers ([in, out] weights), transformer.ln_f, and lm_head tied
// to wte. Checkpoints saved by transformers load as they are, and so do OpenAI's original files,
// whose names lack "transformer." (the tree is then built without it). The decoder block's class
// is "GPT2Block".

namespace ferry::models::detail {

void register_gpt2();

}  // namespace ferry::models::detail
