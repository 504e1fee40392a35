#pragma once
// The architectures ferry knows, keyed by config.json's model_type, and loading a model folder
// (config.json + safetensors) into a model built on meta and dispatched per a device map.

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ferry/core/dtype.h"
#include "ferry/dispatch/load_checkpoint.h"
#include "ferry/models/causal_lm.h"
#include "ferry/models/checkpoint_layout.h"
#include "ferry/models/compute_dtype.h"
#include "ferry/models/generation_config.h"
#include "ferry/models/run_shape.h"

namespace ferry::models {

// Builds a model for a config with parameters in dtypes.weights that computes in dtypes.compute
// (its embeddings convert the rows they look up), on the current init guard's device.
using ModelFactory =
    std::function<std::shared_ptr<CausalLM>(const ModelConfig& config, const ModelDTypes& dtypes)>;

// Adds (or replaces) the factory of `model_type` and the layout load_model checks its
// checkpoints against (default: none); its config.json is read with Llama's field names. The
// built-in architectures (llama, mistral, qwen2, gpt2, phi3, gemma2, mixtral) are registered by
// their own files in src/models/arch/.
void register_model_type(const std::string& model_type, ModelFactory factory,
                         CheckpointLayout layout = {});
// Registered model types, sorted.
std::vector<std::string> supported_model_types();
// The model types make_model can write, sorted.
std::vector<std::string> make_model_architectures();
// The checkpoint layout of `config`'s model type (an empty one for an unknown type).
const CheckpointLayout& checkpoint_layout(const ModelConfig& config);
// The model for `config` with parameters in dtypes.weights, computing in dtypes.compute, on the
// current init guard's device. Throws InvalidArgument "<file>: model_type 'x' is not supported
// (supported: gpt2, llama, ...)".
std::shared_ptr<CausalLM> create_model(const ModelConfig& config, const ModelDTypes& dtypes);
// The same with parameters in `dtype`, computing in it.
std::shared_ptr<CausalLM> create_model(const ModelConfig& config, at::ScalarType dtype);

// Note [Options defaults]
// A designated initializer replaces a whole member: `LoadModelOptions{.dispatch = {.device_map =
// kAuto}}` builds `dispatch` from LoadAndDispatchOptions' own defaults, whatever initializer the
// enclosing struct gave that member. When this struct said `dispatch{.strict = true}`, the default
// object loaded strictly and that designated initializer silently did not. So an options struct
// never gives a nested options member an initializer of its own: every default lives in the
// nested struct's definition, and the default object and any designated initializer agree on
// every field they do not name (tests/models/options_test.cpp checks each nested member).
// Weight-only quantization at load (Accelerate's load_and_quantize_model).
enum class Quantization {
  kNone,  // weights as stored (or narrowed to the compute dtype)
  // The Linear weights inside the decoder blocks (attention and MLP projections; not embeddings,
  // norms or lm_head) held as int8 with a float32 scale per 32 inputs, in RAM and in the offload
  // folder (Note [int8 Linear weights] in src/nn/linear.cpp); computed in the compute dtype.
  kInt8,
};

// The part of a model one rank of a pipeline holds (Note [Pipeline stages]): decoder layers
// [begin, end), and with `ends` the embeddings and the head too (rank 0). Only these are planned
// and loaded; the rest of the model stays on meta, never called.
struct StageRange {
  std::int64_t begin = 0;
  std::int64_t end = 0;
  bool ends = false;
  bool operator==(const StageRange&) const = default;
};

struct LoadModelOptions {
  // Device map, budgets, offload folder. The decoder layer's class is always added to
  // no_split_module_classes; the architecture's ignored keys are added to ignore_unexpected.
  // Missing tensors are always an error; other unused checkpoint tensors are a warning, or an
  // error with strict. dispatch.dtype is best left unset: set, every floating weight is
  // converted to it at load and the model is built in it (a storage choice; Note [Compute
  // dtype]); unset, weights keep their stored dtype unless compute_dtype is narrower.
  dispatch::LoadAndDispatchOptions dispatch;  // no initializer: Note [Options defaults]
  // The dtype the model computes in: float32 by default, whatever the checkpoint stores;
  // {.automatic = true}: the checkpoint's (Note [Compute dtype]).
  ComputeDType compute_dtype;
  // The run's shape: its KV cache and activations are reserved when planning (dispatch.runtime's
  // sizes are replaced by runtime_needs of it; an unset max_new_tokens is the folder's
  // generation_config.json's, else the default).
  RunShape shape;  // no initializer: Note [Options defaults]
  // Quantize the decoder blocks' Linear weights at load; planning counts the quantized bytes.
  Quantization quantize = Quantization::kNone;
  // config.json as the caller already read it (models::load_config of the same folder), so that
  // it is read once; nullopt: load_model and plan_model read it.
  std::optional<ModelConfig> config;
  // Plan and load only this part of the model (a pipeline stage); nullopt: all of it. Its KV
  // cache reserve counts only its own layers.
  std::optional<StageRange> stage;
};

struct LoadedModel {
  ModelConfig config;
  // generation_config.json beside it (with config.json's eos ids where it lists none):
  // resolve_generate_options applies it.
  GenerationConfig generation;
  std::shared_ptr<CausalLM> model;
  DType compute_dtype = DType::kF32;  // what the model computes in (compute_dtype resolved)
  plan::DeviceMap device_map;  // the map used (empty: everything on the CPU, no hooks)
  // The budgets, reserves and plan behind the map when a strategy was given (nullopt for a given
  // map or none).
  std::optional<plan::Resolution> resolution;
  // A stage's module tree (LoadModelOptions::stage): the parts it holds under their own paths,
  // planned, loaded and dispatched in place of model->module(); null for a whole model.
  std::shared_ptr<nn::Module> stage_root;
};

// What load_model would plan for `folder` under `strategy`, without reading any weight: the
// model built on meta (and checked against the checkpoint's headers) and the resolution.
struct PlannedModel {
  ModelConfig config;
  std::shared_ptr<CausalLM> model;
  std::shared_ptr<nn::Module> stage_root;  // as LoadedModel::stage_root
  DType compute_dtype = DType::kF32;  // as LoadedModel::compute_dtype
  plan::Resolution resolution;
};
PlannedModel plan_model(const std::filesystem::path& folder, const LoadModelOptions& options,
                        plan::Strategy strategy);

// Reads `folder`/config.json, checks it against the checkpoint's headers (the architecture's
// CheckpointLayout: embedding shape, layer count), builds the model on meta (each weight in the
// dtype it will be held in, computing in the compute dtype: Note [Compute dtype]; an invalid
// compute dtype throws InvalidArgument before any weight is read), checks that the checkpoint
// has every tensor of the model,
// and loads it with load_checkpoint_and_dispatch. Checkpoint tensors matching the layout's
// ignored_keys are dropped silently; other unused ones are named in one warning. Throws what
// config parsing, the registry and loading throw; ShapeMismatch naming config.json, the field
// and expected vs actual when the config disagrees with the checkpoint; MissingTensor naming
// the tensors the checkpoint lacks; ShapeMismatch naming tensor, file and shapes for a tensor
// that disagrees with the config.
LoadedModel load_model(const std::filesystem::path& folder, const LoadModelOptions& options = {});

}  // namespace ferry::models
