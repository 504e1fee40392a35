#include "ferry/models/causal_lm.h"

#include "ferry/core/error.h"

namespace ferry::models {
namespace {

[[noreturn]] void cannot_split(const CausalLM& model) {
  throw Unsupported(
      fmt::format("model type '{}' cannot run as pipeline stages", model.config().model_type));
}

}  // namespace

CausalLM::StageParts CausalLM::stage_parts() const { cannot_split(*this); }

at::Tensor CausalLM::embed(const StepInput&) { cannot_split(*this); }

at::Tensor CausalLM::layers(const at::Tensor&, const StepInput&, KvCache&, std::int64_t,
                            std::int64_t) {
  cannot_split(*this);
}

at::Tensor CausalLM::head(const at::Tensor&) { cannot_split(*this); }

}  // namespace ferry::models
