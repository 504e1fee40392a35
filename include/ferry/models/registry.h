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

namespace ferry::models {

// Builds a model for a config with parameters of a dtype, on the current init guard's device.
using ModelFactory =
    std::function<std::shared_ptr<CausalLM>(const ModelConfig& config, at::ScalarType dtype)>;

// Adds (or replaces) the factory of `model_type`. Built in: llama, mistral, qwen2, gpt2.
void register_model_type(const std::string& model_type, ModelFactory factory);
// Registered model types, sorted.
std::vector<std::string> supported_model_types();
// The model for `config` with `dtype` parameters on the current init guard's device. Throws
// InvalidArgument "<file>: model_type 'x' is not supported (supported: gpt2, llama, ...)".
std::shared_ptr<CausalLM> create_model(const ModelConfig& config, at::ScalarType dtype);

struct LoadModelOptions {
  // Device map, budgets, offload folder, strict. The decoder layer's class is always added to
  // no_split_module_classes; dtype, when set, is also the dtype the model is built in.
  dispatch::LoadAndDispatchOptions dispatch{.strict = true};
};

struct LoadedModel {
  ModelConfig config;
  std::shared_ptr<CausalLM> model;
  plan::DeviceMap device_map;  // the map used (empty: everything on the CPU, no hooks)
};

// Reads `folder`/config.json, builds the model on meta (in --dtype, else config's torch_dtype,
// else float32) and loads the folder's checkpoint with load_checkpoint_and_dispatch. Throws
// what config parsing, the registry and loading throw (a tensor whose shape disagrees with the
// config: ShapeMismatch naming tensor, file and shapes).
LoadedModel load_model(const std::filesystem::path& folder, const LoadModelOptions& options = {});

}  // namespace ferry::models
