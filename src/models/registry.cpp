#include "ferry/models/registry.h"

#include <algorithm>
#include <map>
#include <mutex>

#include "ferry/core/error.h"
#include "ferry/models/gpt2.h"
#include "ferry/models/llama.h"
#include "ferry/nn/init.h"

namespace ferry::models {
namespace {

struct Registry {
  std::mutex mutex;
  std::map<std::string, ModelFactory> factories{
      {"llama", make_llama}, {"mistral", make_llama}, {"qwen2", make_llama}, {"gpt2", make_gpt2}};
};

Registry& registry() {
  static Registry r;
  return r;
}

at::ScalarType build_dtype(const ModelConfig& config, const std::optional<DType>& requested) {
  if (requested) return require_scalar_type(*requested);
  if (config.torch_dtype.empty()) return at::kFloat;
  try {
    return require_scalar_type(parse_dtype(config.torch_dtype));
  } catch (const Error& e) {
    throw InvalidArgument(fmt::format("{}: field 'torch_dtype' {}", config.file.string(), e.what()),
                          ErrorFields{.path = "torch_dtype", .file = config.file.string()});
  }
}

}  // namespace

void register_model_type(const std::string& model_type, ModelFactory factory) {
  std::lock_guard lock(registry().mutex);
  registry().factories[model_type] = std::move(factory);
}

std::vector<std::string> supported_model_types() {
  std::lock_guard lock(registry().mutex);
  std::vector<std::string> out;
  for (const auto& [name, f] : registry().factories) out.push_back(name);
  return out;
}

std::shared_ptr<CausalLM> create_model(const ModelConfig& config, at::ScalarType dtype) {
  ModelFactory factory;
  {
    std::lock_guard lock(registry().mutex);
    auto it = registry().factories.find(config.model_type);
    if (it != registry().factories.end()) factory = it->second;
  }
  if (!factory) {
    throw InvalidArgument(
        fmt::format("{}: model_type '{}' is not supported (supported: {})", config.file.string(),
                    config.model_type, fmt::join(supported_model_types(), ", ")),
        ErrorFields{
            .path = "model_type", .file = config.file.string(), .actual = config.model_type});
  }
  return factory(config, dtype);
}

LoadedModel load_model(const std::filesystem::path& folder, const LoadModelOptions& options) {
  LoadedModel out;
  out.config = load_config(folder);
  const at::ScalarType dtype = build_dtype(out.config, options.dispatch.dtype);
  {
    nn::InitEmptyWeights guard;
    out.model = create_model(out.config, dtype);
  }
  dispatch::LoadAndDispatchOptions dispatch = options.dispatch;
  const std::string block = out.model->decoder_layer_class();
  if (std::find(dispatch.no_split_module_classes.begin(), dispatch.no_split_module_classes.end(),
                block) == dispatch.no_split_module_classes.end()) {
    dispatch.no_split_module_classes.push_back(block);
  }
  const std::filesystem::path checkpoint =
      std::filesystem::is_directory(folder) ? folder : folder.parent_path();
  out.device_map =
      dispatch::load_checkpoint_and_dispatch(out.model->module(), checkpoint, dispatch);
  return out;
}

}  // namespace ferry::models
