#pragma once
// What one architecture registers (private to models): its config.json parsing and writing, its
// module tree, its checkpoint names and its make-model recipe. Each architecture is one file pair
// under src/models/arch/ and one line in arch/architectures.def (Note [One file per
// architecture]).

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ferry/models/causal_lm.h"
#include "ferry/models/checkpoint_layout.h"
#include "ferry/models/compute_dtype.h"
#include "ferry/models/config.h"
#include "ferry/models/make_model.h"
#include "models/blocks/config_io.h"

namespace ferry::models::detail {

// Note [One file per architecture]
// An architecture lives in src/models/arch/<name>.{h,cpp}: a `register_<name>()` that calls
// add_architecture once per model_type it serves, and a line FERRY_ARCHITECTURE(<name>) in
// arch/architectures.def, which the registry expands into the calls (so the list is explicit and
// no static initializer of a static library is dropped by the linker). The shared code (config
// reading, loading, make-model, generation) asks the registry; it never compares model_type.

// How the checkpoint names the model's tensors.
struct Naming {
  // False when the checkpoint omits the layout's base_model_prefix (OpenAI's GPT-2 files say
  // "h.0.attn.c_attn.weight", not "transformer.h.0..."): the base model's children are then
  // registered on the root, so that module paths stay the checkpoint's names.
  bool base_model_prefixed = true;
};

// Builds the model with parameters in dtypes.weights computing in dtypes.compute (Note [Compute
// dtype]).
using BuildFunction =
    std::function<std::shared_ptr<CausalLM>(const ModelConfig&, const ModelDTypes&, const Naming&)>;

// make-model's recipe: what a synthetic checkpoint of the architecture looks like.
struct MakeRecipe {
  // Stored elements of one decoder layer per hidden_size^2, used to pick dimensions for --size.
  double layer_elements_per_hidden2 = 10.75;
  std::vector<std::string> special_tokens{"<|begin_of_text|>", "<|end_of_text|>"};
  bool add_bos_token = true;  // tokenizer_config.json's add_bos_token
  // Fills the architecture's fields of `config`, whose sizes (vocab, hidden, layers, heads,
  // kv heads, head_dim), dtype and token ids are set already.
  std::function<void(const MakeModelOptions&, ModelConfig&)> configure;
};

struct Architecture {
  std::string model_type;
  // Reads every field but model_type, bos/eos ids and torch_dtype (read for all) into `config`.
  std::function<void(const Reader&, ModelConfig&)> read_config;
  // Writes the fields read_config reads, with the architecture's names.
  std::function<void(const ModelConfig&, Json&)> write_config;
  // An upper bound of the parameters `config` implies (empty: decoder_parameter_bound).
  std::function<double(const ModelConfig&)> parameter_bound;
  BuildFunction build;
  CheckpointLayout layout;
  std::optional<MakeRecipe> make;  // nullopt: make-model cannot write it
};

// Adds (or replaces) an architecture.
void add_architecture(Architecture architecture);
// The architecture of `model_type`, or nullptr.
std::shared_ptr<const Architecture> find_architecture(const std::string& model_type);

// Embedding, head, and per layer attention (q, k, v, o) and a gated MLP (gate, up, down).
double decoder_parameter_bound(const ModelConfig& config);

// The architecture's fields of `config`, as the type its parser created.
template <class Fields>
const Fields& fields_of(const ModelConfig& config) {
  const auto* fields = dynamic_cast<const Fields*>(config.fields.get());
  FERRY_ASSERT(fields != nullptr, "config of {} lacks its architecture's fields",
               config.model_type);
  return *fields;
}

}  // namespace ferry::models::detail
