#pragma once
// Mixtral (model_type "mixtral"): transformers' MixtralForCausalLM module tree — the Llama
// decoder whose MLP is a sparse mixture of experts: model.layers.N.block_sparse_moe.{gate,
// experts.E.{w1, w2, w3}}. The router's softmax picks num_experts_per_tok experts per token
// (weights renormalised over the chosen ones); each expert is a gated MLP (w2(act(w1 x) * w3 x)).
//
// Each expert is its own unit for planning (MixtralBlockSparseTop2MLP is a no-split class, the
// decoder layer is not), so it can rest on a GPU, the CPU or disk on its own; offloaded, it is
// loaded only when a token is routed to it (Note [Routed experts]).

#include <cstdint>

#include "ferry/models/config.h"

namespace ferry::models::detail {

struct MixtralFields final : ArchitectureFields {
  std::int64_t n_experts = 8;            // num_local_experts
  std::int64_t n_experts_per_token = 2;  // num_experts_per_tok
};

void register_mixtral();

}  // namespace ferry::models::detail
