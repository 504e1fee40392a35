#include "ferry/models/registry.h"

#include <algorithm>
#include <charconv>
#include <map>
#include <mutex>
#include <regex>
#include <unordered_set>

#include "ferry/core/devices.h"
#include "ferry/core/error.h"
#include "ferry/core/shape.h"
#include "ferry/io/checkpoint.h"
#include "ferry/models/run_shape.h"
#include "ferry/nn/containers.h"
#include "ferry/nn/init.h"
#include "ferry/nn/linear.h"
#include "ferry/plan/stages.h"
#include "models/architecture.h"
#include "models/int8_source.h"

namespace ferry::models {
namespace detail {
#define FERRY_ARCHITECTURE(name) void register_##name();
#include "models/arch/architectures.def"
#undef FERRY_ARCHITECTURE
}  // namespace detail

namespace {

using detail::Architecture;

struct Registry {
  std::mutex mutex;
  std::map<std::string, std::shared_ptr<const Architecture>> architectures;
};

Registry& storage() {
  static Registry r;
  return r;
}

// The built-in architectures, one line each in arch/architectures.def.
void register_builtin() {
#define FERRY_ARCHITECTURE(name) detail::register_##name();
#include "models/arch/architectures.def"
#undef FERRY_ARCHITECTURE
}

// The registry with the built-in architectures (added on first use, into storage()).
Registry& registry() {
  static std::once_flag once;
  std::call_once(once, register_builtin);
  return storage();
}

std::shared_ptr<const Architecture> require_architecture(const ModelConfig& config) {
  if (auto a = detail::find_architecture(config.model_type); a && a->build) return a;
  throw InvalidArgument(
      fmt::format("{}: model_type '{}' is not supported (supported: {})", config.file.string(),
                  config.model_type, fmt::join(supported_model_types(), ", ")),
      ErrorFields{.path = "model_type", .file = config.file.string(), .actual = config.model_type});
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

// Whether the checkpoint names its tensors with the layout's base_model_prefix: a checkpoint
// without the prefixed embedding but with the unprefixed one is a base model's own save (as
// transformers decides from its base_model_prefix).
detail::Naming naming_of(const CheckpointLayout& layout, const io::TensorSource& source) {
  const std::string& prefix = layout.base_model_prefix;
  if (prefix.empty() || !layout.embedding.starts_with(prefix)) return {};
  const std::string bare = layout.embedding.substr(prefix.size());
  return {.base_model_prefixed = source.contains(layout.embedding) || !source.contains(bare)};
}

// The layout's names as the checkpoint spells them.
CheckpointLayout layout_for(CheckpointLayout layout, const detail::Naming& naming) {
  if (naming.base_model_prefixed) return layout;
  const std::string& prefix = layout.base_model_prefix;
  for (std::string* name : {&layout.embedding, &layout.layers_prefix}) {
    if (name->starts_with(prefix)) *name = name->substr(prefix.size());
  }
  return layout;
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

// Whether every layer runs on a CUDA GPU: real GPUs (simulated ones compute on the CPU), a
// strategy or a map with a GPU (its main device, where CPU and disk blocks stream to), and no
// CPU-resident block computed where it rests.
bool runs_on_cuda_only(const dispatch::LoadAndDispatchOptions& o) {
  if (gpu_count() == 0 || gpus_simulated()) return false;
  if (o.compute.where == dispatch::ComputePolicy::Where::kWeights) return false;
  if (std::holds_alternative<std::monostate>(o.device_map)) return false;
  if (const auto* map = std::get_if<plan::DeviceMap>(&o.device_map)) {
    // CPU and disk modules of a map with a GPU stream to it (the main device).
    return std::any_of(map->entries().begin(), map->entries().end(),
                       [](const auto& entry) { return entry.second.is_gpu(); });
  }
  return true;
}

// Gives each floating tensor of `model` that `source` stores the dtype it is held in (Note
// [Compute dtype]): its stored dtype, or the compute dtype where that is narrower. The model is
// on meta, so this allocates nothing; loading then converts only what is narrowed.
void hold_weights(nn::Module& model, const io::TensorSource& source, DType compute) {
  for (const std::string& name : source.names()) {
    std::optional<nn::NamedTensor> target;
    try {
      target = model.find_tensor(name);
    } catch (const MissingTensor&) {
      continue;  // unexpected or ignored: load_checkpoint_in_model reports it
    }
    const TensorInfo stored = source.info(name);
    const at::Tensor& current = target->tensor();
    if (!is_floating(stored.dtype) || !at::isFloatingType(current.scalar_type())) continue;
    // A stored dtype LibTorch lacks (float8) is converted at load to the built dtype, as before.
    const std::optional<at::ScalarType> held = to_scalar_type(held_dtype(stored.dtype, compute));
    if (!held || *held == current.scalar_type()) continue;
    target->slot()->assign(at::empty(current.sizes(), current.options().dtype(*held)), name);
  }
}

// Quantizes (on meta: re-types) the Linear layers inside the model's decoder blocks (its
// no-split classes) and returns their weights' names. Embeddings, norms and lm_head stay as they
// are: lm_head is often tied to the embedding, and its error would reach every logit.
std::vector<std::string> quantize_blocks(CausalLM& model) {
  const std::vector<std::string> blocks = model.no_split_classes();
  std::vector<std::string> block_prefixes;
  for (const nn::NamedModule& m : model.module().named_modules()) {
    if (std::find(blocks.begin(), blocks.end(), m.module->class_name()) != blocks.end()) {
      block_prefixes.push_back(m.name + ".");
    }
  }
  return nn::quantize_linears(model.module(), [&block_prefixes](const std::string& path) {
    return std::any_of(block_prefixes.begin(), block_prefixes.end(),
                       [&path](const std::string& prefix) { return path.starts_with(prefix); });
  });
}

}  // namespace

namespace detail {

void add_architecture(Architecture architecture) {
  std::lock_guard lock(storage().mutex);
  const std::string model_type = architecture.model_type;
  storage().architectures[model_type] =
      std::make_shared<const Architecture>(std::move(architecture));
}

std::shared_ptr<const Architecture> find_architecture(const std::string& model_type) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  auto it = r.architectures.find(model_type);
  return it == r.architectures.end() ? nullptr : it->second;
}

}  // namespace detail

void register_model_type(const std::string& model_type, ModelFactory factory,
                         CheckpointLayout layout) {
  registry();  // the built-in ones first, so that this one replaces any of the same name
  detail::add_architecture({.model_type = model_type,
                            .build = [factory = std::move(factory)](
                                         const ModelConfig& config, const ModelDTypes& dtypes,
                                         const detail::Naming&) { return factory(config, dtypes); },
                            .layout = std::move(layout)});
}

std::vector<std::string> supported_model_types() {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  std::vector<std::string> out;
  for (const auto& [name, a] : r.architectures) {
    if (a->build) out.push_back(name);
  }
  return out;
}

std::vector<std::string> make_model_architectures() {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  std::vector<std::string> out;
  for (const auto& [name, a] : r.architectures) {
    if (a->make) out.push_back(name);
  }
  return out;
}

const CheckpointLayout& checkpoint_layout(const ModelConfig& config) {
  static const CheckpointLayout none;
  const std::shared_ptr<const Architecture> a = detail::find_architecture(config.model_type);
  return a ? a->layout : none;  // architectures are never removed: the reference stays valid
}

std::shared_ptr<CausalLM> create_model(const ModelConfig& config, const ModelDTypes& dtypes) {
  return require_architecture(config)->build(config, dtypes, detail::Naming{});
}

std::shared_ptr<CausalLM> create_model(const ModelConfig& config, at::ScalarType dtype) {
  return create_model(config, ModelDTypes{.weights = dtype, .compute = dtype});
}

namespace {

// The shared_ptr of the module at dotted `path` under `root`.
std::shared_ptr<nn::Module> shared_submodule(nn::Module& root, const std::string& path) {
  nn::Module* at = &root;
  std::shared_ptr<nn::Module> found;
  std::size_t start = 0;
  while (start <= path.size()) {
    const std::size_t dot = std::min(path.find('.', start), path.size());
    const std::string name = path.substr(start, dot - start);
    found = nullptr;
    for (const auto& [child_name, child] : at->children()) {
      if (child_name == name) found = child;
    }
    FERRY_CHECK(found != nullptr, InternalError, "stage part {}: no module {}", path, name);
    at = found.get();
    start = dot + 1;
  }
  return found;
}

// A tree that holds the parts of `model` a stage owns under their own paths (Note [Pipeline
// stages]): what a rank plans, loads and dispatches.
std::shared_ptr<nn::Module> stage_tree(CausalLM& model, const StageRange& stage) {
  const CausalLM::StageParts parts = model.stage_parts();
  const auto n = static_cast<std::int64_t>(parts.layers.size());
  FERRY_CHECK(0 <= stage.begin && stage.begin <= stage.end && stage.end <= n &&
                  (stage.ends || stage.begin < stage.end),
              InvalidArgument, "a stage of layers [{}, {}){} of a model of {} layers", stage.begin,
              stage.end, stage.ends ? " with the embeddings and head" : "", n);
  std::vector<std::string> paths;
  if (stage.ends) paths = parts.first;
  for (std::int64_t i = stage.begin; i < stage.end; ++i) {
    paths.push_back(parts.layers[static_cast<std::size_t>(i)]);
  }
  if (stage.ends) paths.insert(paths.end(), parts.last.begin(), parts.last.end());
  auto root = std::make_shared<nn::ModuleDict>();
  for (const std::string& path : paths) {
    nn::Module* parent = root.get();
    std::size_t start = 0;
    for (std::size_t dot = path.find('.'); dot != std::string::npos;
         start = dot + 1, dot = path.find('.', start)) {
      const std::string name = path.substr(start, dot - start);
      nn::Module* next = parent->child(name);
      if (next == nullptr) {
        auto dict = std::make_shared<nn::ModuleDict>();
        next = dict.get();
        parent->register_module(name, std::move(dict));
      }
      parent = next;
    }
    parent->register_module(path.substr(start), shared_submodule(model.module(), path));
  }
  return root;
}

// A model built on meta and checked against its checkpoint, with the load options it is loaded
// with: what plan_model and load_model share, so that both plan the same model the same way.
struct Prepared {
  LoadedModel out;
  // What is planned and loaded: the stage's tree, else the whole model.
  nn::Module& root() { return out.stage_root ? *out.stage_root : out.model->module(); }
  std::filesystem::path checkpoint;
  std::shared_ptr<const io::TensorSource> source;  // the checkpoint as the model reads it
  dispatch::LoadAndDispatchOptions dispatch;
};

Prepared prepare(const std::filesystem::path& folder, const LoadModelOptions& options) {
  Prepared prepared;
  LoadedModel& out = prepared.out;
  out.config = options.config ? *options.config : load_config(folder);
  const std::shared_ptr<const Architecture> architecture = require_architecture(out.config);
  const std::filesystem::path checkpoint =
      std::filesystem::is_directory(folder) ? folder : folder.parent_path();
  // Before anything is read: the user's offload folder must not be the checkpoint's own.
  dispatch::check_offload_folder(options.dispatch.offload_folder, checkpoint);
  out.generation = model_generation_config(out.config, load_generation_config(checkpoint));
  {
    // Headers only: cheap, and done before the model is built (Note [Config against checkpoint]).
    std::shared_ptr<const io::TensorSource> source = io::open_checkpoint(checkpoint);
    const detail::Naming naming = naming_of(architecture->layout, *source);
    check_against_checkpoint(out.config, layout_for(architecture->layout, naming), *source);
    // Note [Compute dtype]: built in the dtype most weights are held in, then each weight in its
    // own (a checkpoint may mix float32 norms with bfloat16 matrices); a caller's dispatch.dtype
    // is a storage choice that replaces both.
    out.compute_dtype = resolve_compute_dtype(options.compute_dtype, out.config, *source);
    check_computable(out.compute_dtype, runs_on_cuda_only(options.dispatch));
    const at::ScalarType compute = require_scalar_type(out.compute_dtype);
    const at::ScalarType weights =
        options.dispatch.dtype
            ? require_scalar_type(*options.dispatch.dtype)
            : to_scalar_type(held_dtype(stored_floating_dtype(*source).value_or(DType::kF32),
                                        out.compute_dtype))
                  .value_or(compute);
    nn::InitEmptyWeights guard;
    out.model =
        architecture->build(out.config, ModelDTypes{.weights = weights, .compute = compute}, naming);
    std::vector<std::string> quantized;
    if (options.quantize == Quantization::kInt8) {
      quantized = quantize_blocks(*out.model);
      source = detail::int8_view(std::move(source), quantized);
    }
    if (!options.dispatch.dtype) hold_weights(out.model->module(), *source, out.compute_dtype);
    for (const std::string& weight : quantized) {
      // Scales keep the dtype the source gives them whatever the weights are held in
      // (hold_weights narrows floats): float16 when quantized here, float32 from an int8
      // model saved so.
      const nn::NamedTensor scale = out.model->module().find_tensor(detail::scale_name(weight));
      const std::optional<TensorInfo> stored = source->find(detail::scale_name(weight));
      const at::ScalarType dtype =
          stored ? to_scalar_type(stored->dtype).value_or(at::kHalf) : at::kHalf;
      if (scale.tensor().scalar_type() != dtype) {
        scale.slot()->assign(scale.tensor().to(dtype), scale.name);
      }
    }
    if (options.stage) out.stage_root = stage_tree(*out.model, *options.stage);
    const std::vector<std::string> missing = missing_tensors(prepared.root(), *source);
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
    prepared.source = std::move(source);
  }
  dispatch::LoadAndDispatchOptions dispatch = options.dispatch;
  for (const std::string& block : out.model->no_split_classes()) {
    if (std::find(dispatch.no_split_module_classes.begin(), dispatch.no_split_module_classes.end(),
                  block) == dispatch.no_split_module_classes.end()) {
      dispatch.no_split_module_classes.push_back(block);
    }
  }
  // Note [Routed experts]: each on-demand module is one block, loaded only when it is called.
  for (const std::string& on_demand : out.model->on_demand_classes()) {
    if (std::find(dispatch.preload_module_classes.begin(), dispatch.preload_module_classes.end(),
                  on_demand) == dispatch.preload_module_classes.end()) {
      dispatch.preload_module_classes.push_back(on_demand);
    }
    if (dispatch.prefetch) dispatch.prefetch->on_demand_classes.push_back(on_demand);
  }
  if (options.stage) {
    // The other stages' tensors are the other ranks' (Note [Pipeline stages]).
    dispatch.ignore_unexpected = [](const std::string&) { return true; };
  } else if (!architecture->layout.ignored_keys.empty()) {
    std::vector<std::regex> ignored;
    for (const std::string& pattern : architecture->layout.ignored_keys)
      ignored.emplace_back(pattern);
    dispatch.ignore_unexpected = [ignored = std::move(ignored),
                                  caller =
                                      options.dispatch.ignore_unexpected](const std::string& name) {
      return (caller && caller(name)) ||
             std::any_of(ignored.begin(), ignored.end(),
                         [&](const std::regex& r) { return std::regex_match(name, r); });
    };
  }
  RunShape shape = options.shape;
  shape.max_new_tokens = resolve_max_new_tokens(out.generation, shape.max_new_tokens);
  plan::RuntimeOptions needs =
      runtime_needs(out.config, shape, require_scalar_type(out.compute_dtype));
  if (options.stage && out.config.n_layers > 0) {
    // A stage caches only its own layers (as `ferry plan --world-size` reserves it).
    needs =
        plan::stage_runtime(needs, options.stage->end - options.stage->begin, out.config.n_layers);
  }
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
  plan::Resolution resolution = dispatch::resolve_for_dispatch(p.root(), strategy, p.dispatch);
  return {.config = std::move(p.out.config),
          .model = std::move(p.out.model),
          .stage_root = std::move(p.out.stage_root),
          .compute_dtype = p.out.compute_dtype,
          .resolution = std::move(resolution)};
}

LoadedModel load_model(const std::filesystem::path& folder, const LoadModelOptions& options) {
  Prepared p = prepare(folder, options);
  if (const auto* strategy = std::get_if<plan::Strategy>(&p.dispatch.device_map)) {
    // Resolved once, here: the budgets are probed at most once, and what `ferry plan` shows
    // (plan_model) is what is loaded.
    p.out.resolution = dispatch::resolve_for_dispatch(p.root(), *strategy, p.dispatch);
    dispatch::apply_resolution(p.dispatch, *p.out.resolution);
  }
  p.out.device_map = dispatch::load_checkpoint_and_dispatch(p.root(), p.source, p.dispatch);
  return std::move(p.out);
}

}  // namespace ferry::models
