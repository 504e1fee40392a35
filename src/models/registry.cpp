#include "ferry/models/registry.h"

#include <algorithm>
#include <charconv>
#include <map>
#include <mutex>
#include <regex>
#include <unordered_set>

#include "ferry/core/error.h"
#include "ferry/core/shape.h"
#include "ferry/io/checkpoint.h"
#include "ferry/models/gpt2.h"
#include "ferry/models/llama.h"
#include "ferry/models/run_shape.h"
#include "ferry/nn/init.h"

namespace ferry::models {
namespace {

struct Architecture {
  ModelFactory factory;
  CheckpointLayout layout;
};

struct Registry {
  std::mutex mutex;
  std::map<std::string, Architecture> architectures{
      {"llama", {make_llama, llama_checkpoint_layout()}},
      {"mistral", {make_llama, llama_checkpoint_layout()}},
      {"qwen2", {make_llama, llama_checkpoint_layout()}},
      {"gpt2", {make_gpt2, gpt2_checkpoint_layout()}}};
};

Registry& registry() {
  static Registry r;
  return r;
}

Architecture find_architecture(const ModelConfig& config) {
  {
    std::lock_guard lock(registry().mutex);
    auto it = registry().architectures.find(config.model_type);
    if (it != registry().architectures.end() && it->second.factory) return it->second;
  }
  throw InvalidArgument(
      fmt::format("{}: model_type '{}' is not supported (supported: {})", config.file.string(),
                  config.model_type, fmt::join(supported_model_types(), ", ")),
      ErrorFields{.path = "model_type", .file = config.file.string(), .actual = config.model_type});
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

// Note [Config against checkpoint]
// config.json's sizes are checked against the checkpoint's headers before anything is built: a
// config that disagrees (a layer count off by a digit, another model's config) fails at once,
// naming config.json and the field, instead of building a model of its sizes for minutes and
// then failing on the first tensor.
void check_against_checkpoint(const ModelConfig& c, const CheckpointLayout& layout,
                              const io::TensorSource& source) {
  const std::string config_file = c.file.string();
  if (!layout.embedding.empty()) {
    const std::optional<TensorInfo> info = source.find(layout.embedding);
    if (!info) {
      throw MissingTensor(fmt::format("{} has no tensor '{}' (the [{}, {}] embedding {} describes)",
                                      source.description(), layout.embedding, c.vocab_size,
                                      c.hidden_size, config_file),
                          ErrorFields{.path = layout.embedding, .file = source.description()});
    }
    const std::vector<std::int64_t> expected{c.vocab_size, c.hidden_size};
    if (info->shape != expected) {
      const bool vocab_differs = info->shape.empty() || info->shape[0] != c.vocab_size;
      const std::string field = vocab_differs ? "vocab_size" : layout.hidden_size_field;
      throw ShapeMismatch(
          fmt::format("{}: field '{}' disagrees with the checkpoint: tensor '{}' in {}: expected "
                      "shape {} (vocab_size, {}), got {}",
                      config_file, field, layout.embedding,
                      source.file_of(layout.embedding).string(), shape_string(expected),
                      layout.hidden_size_field, shape_string(info->shape)),
          ErrorFields{.path = field,
                      .file = config_file,
                      .expected = shape_string(expected),
                      .actual = shape_string(info->shape)});
    }
  }
  if (!layout.layers_prefix.empty()) {
    std::optional<std::int64_t> highest;
    for (const std::string& name : source.names()) {
      if (!name.starts_with(layout.layers_prefix)) continue;
      const char* begin = name.data() + layout.layers_prefix.size();
      const char* end = name.data() + name.size();
      std::int64_t index = 0;
      const auto [stop, error] = std::from_chars(begin, end, index);
      if (error != std::errc() || stop == begin || stop == end || *stop != '.') continue;
      highest = std::max(highest.value_or(index), index);
    }
    if (!highest || *highest != c.n_layers - 1) {
      const std::string actual =
          highest ? fmt::format("{} layers ({}0 to {}{})", *highest + 1, layout.layers_prefix,
                                layout.layers_prefix, *highest)
                  : fmt::format("no {}N tensors", layout.layers_prefix);
      throw ShapeMismatch(
          fmt::format("{}: field '{}' disagrees with the checkpoint: {} has {}, expected {}",
                      config_file, layout.n_layers_field, source.description(), actual, c.n_layers),
          ErrorFields{.path = layout.n_layers_field,
                      .file = config_file,
                      .expected = fmt::format("{} layers", c.n_layers),
                      .actual = actual});
    }
  }
}

// The model's tensors the checkpoint does not provide (tied ones count as provided through any
// of their names), as load_checkpoint_in_model counts them — found before anything is loaded.
std::vector<std::string> missing_tensors(nn::Module& model, const io::TensorSource& source) {
  std::unordered_set<const nn::Slot*> provided;
  for (const std::string& name : source.names()) {
    try {
      provided.insert(model.find_tensor(name).slot().get());
    } catch (const MissingTensor&) {
    }
  }
  std::vector<std::string> missing;
  for (const auto& [name, tensor] : model.state_dict({.keep_tied = true})) {
    if (!provided.contains(model.find_tensor(name).slot().get())) missing.push_back(name);
  }
  return missing;
}

}  // namespace

void register_model_type(const std::string& model_type, ModelFactory factory,
                         CheckpointLayout layout) {
  std::lock_guard lock(registry().mutex);
  registry().architectures[model_type] = Architecture{std::move(factory), std::move(layout)};
}

std::vector<std::string> supported_model_types() {
  std::lock_guard lock(registry().mutex);
  std::vector<std::string> out;
  for (const auto& [name, a] : registry().architectures) out.push_back(name);
  return out;
}

std::shared_ptr<CausalLM> create_model(const ModelConfig& config, at::ScalarType dtype) {
  return find_architecture(config).factory(config, dtype);
}

namespace {

// A model built on meta and checked against its checkpoint, with the load options it is loaded
// with: what plan_model and load_model share, so that both plan the same model the same way.
struct Prepared {
  LoadedModel out;
  std::filesystem::path checkpoint;
  dispatch::LoadAndDispatchOptions dispatch;
};

Prepared prepare(const std::filesystem::path& folder, const LoadModelOptions& options) {
  Prepared prepared;
  LoadedModel& out = prepared.out;
  out.config = options.config ? *options.config : load_config(folder);
  const Architecture architecture = find_architecture(out.config);
  const at::ScalarType dtype = build_dtype(out.config, options.dispatch.dtype);
  const std::filesystem::path checkpoint =
      std::filesystem::is_directory(folder) ? folder : folder.parent_path();
  {
    // Headers only: cheap, and done before the model is built (Note [Config against checkpoint]).
    const std::shared_ptr<const io::TensorSource> source = io::open_checkpoint(checkpoint);
    check_against_checkpoint(out.config, architecture.layout, *source);
    nn::InitEmptyWeights guard;
    out.model = architecture.factory(out.config, dtype);
    const std::vector<std::string> missing = missing_tensors(out.model->module(), *source);
    if (!missing.empty()) {
      constexpr std::size_t kShown = 8;
      const std::size_t shown = std::min(missing.size(), kShown);
      throw MissingTensor(
          fmt::format(
              "{} lacks {} tensor(s) of the {} that {} describes: [{}{}]", source->description(),
              missing.size(), out.model->module().class_name(), out.config.file.string(),
              fmt::join(missing.begin(), missing.begin() + static_cast<long>(shown), ", "),
              missing.size() > shown ? fmt::format(", and {} more", missing.size() - shown) : ""),
          ErrorFields{.path = missing.front(),
                      .file = source->description(),
                      .expected = "every tensor of the model",
                      .actual = fmt::format("{} missing", missing.size())});
    }
  }
  dispatch::LoadAndDispatchOptions dispatch = options.dispatch;
  const std::string block = out.model->decoder_layer_class();
  if (std::find(dispatch.no_split_module_classes.begin(), dispatch.no_split_module_classes.end(),
                block) == dispatch.no_split_module_classes.end()) {
    dispatch.no_split_module_classes.push_back(block);
  }
  if (!architecture.layout.ignored_keys.empty()) {
    std::vector<std::regex> ignored;
    for (const std::string& pattern : architecture.layout.ignored_keys)
      ignored.emplace_back(pattern);
    dispatch.ignore_unexpected = [ignored = std::move(ignored),
                                  caller =
                                      options.dispatch.ignore_unexpected](const std::string& name) {
      return (caller && caller(name)) ||
             std::any_of(ignored.begin(), ignored.end(),
                         [&](const std::regex& r) { return std::regex_match(name, r); });
    };
  }
  const plan::RuntimeOptions needs = runtime_needs(out.config, options.shape, dtype);
  dispatch.runtime.kv_cache_bytes = needs.kv_cache_bytes;
  dispatch.runtime.kv_cache_layers = needs.kv_cache_layers;
  dispatch.runtime.activation_bytes = needs.activation_bytes;
  dispatch.runtime.footprint_bytes = needs.footprint_bytes;
  prepared.checkpoint = checkpoint;
  prepared.dispatch = std::move(dispatch);
  return prepared;
}

}  // namespace

PlannedModel plan_model(const std::filesystem::path& folder, const LoadModelOptions& options,
                        plan::Strategy strategy) {
  Prepared p = prepare(folder, options);
  plan::Resolution resolution =
      dispatch::resolve_for_dispatch(p.out.model->module(), strategy, p.dispatch);
  return {.config = std::move(p.out.config),
          .model = std::move(p.out.model),
          .resolution = std::move(resolution)};
}

LoadedModel load_model(const std::filesystem::path& folder, const LoadModelOptions& options) {
  Prepared p = prepare(folder, options);
  if (const auto* strategy = std::get_if<plan::Strategy>(&p.dispatch.device_map)) {
    // Resolved once, here: the budgets are probed at most once, and what `ferry plan` shows
    // (plan_model) is what is loaded.
    p.out.resolution = dispatch::resolve_for_dispatch(p.out.model->module(), *strategy, p.dispatch);
    dispatch::apply_resolution(p.dispatch, *p.out.resolution);
  }
  p.out.device_map =
      dispatch::load_checkpoint_and_dispatch(p.out.model->module(), p.checkpoint, p.dispatch);
  return std::move(p.out);
}

}  // namespace ferry::models
