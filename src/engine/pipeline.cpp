#include "ferry/engine/pipeline.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <unordered_map>
#include <utility>

#include "ferry/core/error.h"
#include "ferry/core/log.h"
#include "ferry/io/checkpoint.h"
#include "ferry/models/config.h"
#include "ferry/models/kv_cache.h"
#include "ferry/plan/memory_budget.h"
#include "ferry/plan/stages.h"
#include "io/json_file.h"

namespace ferry::engine {

// Note [Pipeline caches]
// ~~~~~~~~~~~~~~~~~~~~~~
// Each rank keeps the KV cache of its own layers. Rank 0's callers (models::generate, the
// Engine) create caches and change their rows between steps (a batch that loses or gains rows:
// models::KvCache::keep and append_rows), unaware of the other ranks. So every cache a Pipeline
// steps gets the Pipeline's listener, which records those changes, and each rank > 0 keeps a
// cache under the same id and replays them, in order, before the next step: the changes travel
// in that step's control message, as does the end of a cache (its destructor). A cache that was
// never stepped holds nothing anywhere, so what is done to it before needs no replay. Before each
// step every rank checks that its layers hold exactly the positions rank 0 expects (mask width
// minus the step's tokens): a replay that went wrong is an error, never a silently wrong answer.
//
// Per step, rank 0 sends each other rank one control message (JSON: the cache, the batch shape,
// the dtype of the hidden states, the cache changes) and the step's position ids and attention
// mask (small int64 tensors: rotary and masks are computed where the layers run); the hidden
// states go 0 → 1 → … → N-1 and back to rank 0, which applies the head.

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kReady = "ready";
constexpr std::string_view kFailed = "failed: ";
// How long a stage waits for rank 0's next step: as long as rank 0 lives (a dead rank 0 closes
// its connections, which ends the wait at once).
constexpr std::chrono::milliseconds kIdleWait = std::chrono::hours(24 * 365);

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Row bounds of the micro-batches of a batch: [0, ..., batch], at most `wanted` parts, none
// empty.
std::vector<std::int64_t> micro_bounds(std::int64_t batch, int wanted) {
  const std::int64_t parts = std::clamp<std::int64_t>(wanted, 1, std::max<std::int64_t>(batch, 1));
  std::vector<std::int64_t> bounds;
  for (std::int64_t m = 0; m <= parts; ++m) bounds.push_back(batch * m / parts);
  return bounds;
}

// Rows [begin, end) of a stage's layers of `cache`, as a cache of their own.
models::KvCache rows_of(const models::KvCache& cache, const models::StageRange& stage,
                        std::int64_t begin, std::int64_t end) {
  models::KvCache part(cache.n_layers());
  for (std::int64_t l = stage.begin; l < stage.end; ++l) {
    const models::LayerCache& layer = cache.layer(static_cast<std::size_t>(l));
    if (layer.empty()) continue;
    part.layer(static_cast<std::size_t>(l))
        .assign(layer.key().narrow(0, begin, end - begin),
                layer.value().narrow(0, begin, end - begin));
  }
  return part;
}

models::StepInput rows_of(const models::StepInput& in, std::int64_t begin, std::int64_t end) {
  return {.input_ids = in.input_ids.narrow(0, begin, end - begin),
          .position_ids = in.position_ids.narrow(0, begin, end - begin),
          .attention_mask = in.attention_mask.narrow(0, begin, end - begin)};
}

// Note [Pipeline micro-batches]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// A step's rows may cross the stages in parts (PipelineOptions::micro_batches): stage k runs
// part m while stage k+1 runs part m-1, GPipe's schedule, so that with a batch every rank works
// at once. Each part's hidden states go out with a non-blocking send tagged with its number, and
// rank 0 posts the receives of every part's answer before it starts, so no rank ever waits on a
// neighbour that is itself waiting to send. Each part reads a stage's weights once more: with
// decode bound by memory bandwidth, parts pay when the stages run on different machines (their
// own bandwidth) and the batch is large enough to be compute-bound; one part (the default) is
// exactly the unsplit step. The caches of a stage's layers are split by rows for the parts and
// joined after them.
//
// Runs `local`'s layers of `stage` on each micro-batch of `in` (rows `bounds`): the input
// hidden states are rows of `hidden` on rank 0, else received from the previous rank; the
// output goes to the next rank (rank 0 for the last stage).
void run_micro_batches(World& world, models::CausalLM& local, const models::StepInput& in,
                       const at::Tensor& hidden, models::KvCache& cache,
                       const models::StageRange& stage, const std::vector<std::int64_t>& bounds,
                       at::ScalarType dtype, std::int64_t hidden_size, double& compute_seconds) {
  const int rank = world.rank();
  const int next = (rank + 1) % world.size();
  const std::size_t parts = bounds.size() - 1;
  std::vector<at::Tensor> sent;  // alive until their sends complete
  sent.reserve(parts);
  std::vector<std::unique_ptr<World::Pending>> sends;
  std::vector<models::KvCache> part_caches;
  for (std::size_t m = 0; m < parts; ++m) {
    const std::int64_t begin = bounds[m];
    const std::int64_t end = bounds[m + 1];
    const int tag = static_cast<int>(m) + 1;
    at::Tensor h;
    if (rank == 0) {
      h = parts == 1 ? hidden : hidden.narrow(0, begin, end - begin);
    } else {
      h = at::empty({end - begin, in.position_ids.size(1), hidden_size},
                    at::TensorOptions().dtype(dtype));
      world.irecv(h, rank - 1, tag)->wait();
    }
    const Clock::time_point computing = Clock::now();
    at::Tensor out;
    if (parts == 1) {
      out = local.layers(h, in, cache, stage.begin, stage.end);
    } else {
      part_caches.push_back(rows_of(cache, stage, begin, end));
      out = local.layers(h, rows_of(in, begin, end), part_caches.back(), stage.begin, stage.end);
    }
    sent.push_back(out.to(at::kCPU).to(dtype).contiguous());
    compute_seconds += seconds_since(computing);
    sends.push_back(world.isend(sent.back(), next, tag));
  }
  for (auto& s : sends) s->wait();
  if (parts == 1) return;
  for (std::int64_t l = stage.begin; l < stage.end; ++l) {
    std::vector<at::Tensor> keys, values;
    for (models::KvCache& part : part_caches) {
      keys.push_back(part.layer(static_cast<std::size_t>(l)).key());
      values.push_back(part.layer(static_cast<std::size_t>(l)).value());
    }
    cache.layer(static_cast<std::size_t>(l)).assign(at::cat(keys, 0), at::cat(values, 0));
  }
}

void check_cache_in_step(const models::KvCache& cache, const models::StageRange& stage,
                         std::int64_t expected, int rank) {
  for (std::int64_t l = stage.begin; l < stage.end; ++l) {
    const models::LayerCache& layer = cache.layer(static_cast<std::size_t>(l));
    const std::int64_t held = layer.length();
    FERRY_CHECK(held == expected, InternalError,
                "pipeline caches out of step: rank {} layer {} of cache {} holds {} position(s), "
                "the step expects {}",
                rank, l, cache.id(), held, expected);
  }
}

}  // namespace

std::string PipelineLayout::describe() const {
  std::string out;
  for (std::size_t r = 0; r < stages.size(); ++r) {
    if (r > 0) out += "; ";
    out += fmt::format("rank {}: layers {}-{}{}", r, stages[r].begin, stages[r].end - 1,
                       stages[r].ends ? " (+ embeddings, head)" : "");
  }
  return out;
}

std::string PipelineLayout::fingerprint() const {
  json j = json::array();
  for (const models::StageRange& s : stages) j.push_back({s.begin, s.end, s.ends});
  return j.dump();
}

void check_layout(const PipelineLayout& layout, std::int64_t n_layers, int world_size) {
  FERRY_CHECK(static_cast<int>(layout.stages.size()) == world_size, InvalidArgument,
              "pipeline layout has {} stage(s) for a world of {} rank(s)", layout.stages.size(),
              world_size);
  std::int64_t next = 0;
  for (std::size_t r = 0; r < layout.stages.size(); ++r) {
    const models::StageRange& s = layout.stages[r];
    FERRY_CHECK(s.begin == next && s.begin < s.end && s.end <= n_layers && s.ends == (r == 0),
                InvalidArgument,
                "pipeline layout: rank {} holds layers [{}, {}){}; expected a non-empty range "
                "starting at layer {} within the model's {} layers{}",
                r, s.begin, s.end, s.ends ? " and the ends" : "", next, n_layers,
                r == 0 ? ", with the embeddings and head" : ", without the embeddings and head");
    next = s.end;
  }
  FERRY_CHECK(next == n_layers, InvalidArgument,
              "pipeline layout covers layers [0, {}) of the model's {}", next, n_layers);
}

// Records what rank 0's callers do to the caches it stepped (Note [Pipeline caches]).
class Pipeline::Listener final : public models::CacheListener {
 public:
  void on_keep(const models::KvCache& cache, const at::Tensor& rows, std::int64_t first,
               std::int64_t width) override {
    const at::Tensor r = rows.to(at::kCPU).to(at::kLong).contiguous();
    std::vector<std::int64_t> list(r.data_ptr<std::int64_t>(),
                                   r.data_ptr<std::int64_t>() + r.numel());
    pending.push_back(
        {{"keep", cache.id()}, {"rows", std::move(list)}, {"first", first}, {"width", width}});
  }
  void on_append_rows(const models::KvCache& cache, const models::KvCache& other,
                      std::int64_t pad_self, std::int64_t pad_other) override {
    pending.push_back({{"append", cache.id()},
                       {"from", other.id()},
                       {"pad_self", pad_self},
                       {"pad_other", pad_other}});
  }
  void on_destroyed(std::uint64_t cache_id) noexcept override {
    try {
      pending.push_back({{"free", cache_id}});
    } catch (...) {  // out of memory: the other ranks keep a dead cache until they finish
    }
  }
  json take() { return std::exchange(pending, json::array()); }

 private:
  json pending = json::array();
};

Pipeline::Pipeline(World& world, std::shared_ptr<models::CausalLM> local, PipelineLayout layout,
                   PipelineOptions options, std::chrono::milliseconds ready_timeout)
    : world_(world),
      local_(std::move(local)),
      layout_(std::move(layout)),
      options_(options),
      listener_(std::make_shared<Listener>()) {
  FERRY_CHECK(world_.rank() == 0, InvalidArgument,
              "a Pipeline runs on rank 0; rank {} serves its stage (serve_stage)", world_.rank());
  check_layout(layout_, local_->config().n_layers, world_.size());
  for (int r = 1; r < world_.size(); ++r) {
    const std::string answer = world_.recv_bytes(r, ready_timeout);
    if (answer == kReady) continue;
    // The other ranks are (or will be) waiting for steps: tell them to finish.
    finished_ = true;
    const std::string finish = json{{"op", "finish"}, {"cache_ops", json::array()}}.dump();
    for (int other = 1; other < world_.size(); ++other) {
      if (other == r) continue;
      try {
        world_.send_bytes(finish, other);
      } catch (const std::exception& e) {
        log_warning("pipeline: could not tell rank {} to finish: {}", other, e.what());
      }
    }
    throw DistributedError(fmt::format("rank {} cannot serve its stage (layers {}-{}): {}", r,
                                       layout_.stages[static_cast<std::size_t>(r)].begin,
                                       layout_.stages[static_cast<std::size_t>(r)].end - 1,
                                       answer.rfind(kFailed, 0) == 0
                                           ? answer.substr(std::string_view(kFailed).size())
                                           : "unexpected message '" + answer + "'"));
  }
}

Pipeline::~Pipeline() {
  try {
    finish();
  } catch (const std::exception& e) {
    log_warning("pipeline: could not tell the other ranks to finish: {}", e.what());
  }
}

void Pipeline::finish() {
  if (finished_) return;
  finished_ = true;
  const std::string message =
      json{{"op", "finish"}, {"report", true}, {"cache_ops", listener_->take()}}.dump();
  for (int r = 1; r < world_.size(); ++r) world_.send_bytes(message, r);
  // Each stage's time computing, for the share of a step spent passing data (step_seconds
  // minus every stage's compute: the stages of one part run one after another).
  stage_compute_seconds_ = {compute_seconds_};
  for (int r = 1; r < world_.size(); ++r) {
    stage_compute_seconds_.push_back(std::stod(world_.recv_bytes(r)));
  }
}

at::Tensor Pipeline::step(const models::StepInput& in, models::KvCache& cache) {
  FERRY_CHECK(!finished_, InvalidArgument, "pipeline: a step after finish()");
  const Clock::time_point start = Clock::now();
  if (!cache.listener()) {
    cache.set_listener(listener_);
  } else {
    FERRY_CHECK(cache.listener() == listener_, InvalidArgument,
                "pipeline: cache {} belongs to another pipeline", cache.id());
  }
  const models::StageRange& mine = layout_.stages[0];
  const std::int64_t batch = in.input_ids.size(0);
  const std::int64_t tokens = in.input_ids.size(1);
  const std::int64_t width = in.attention_mask.size(1);
  check_cache_in_step(cache, mine, width - tokens, 0);
  const std::vector<std::int64_t> bounds = micro_bounds(batch, options_.micro_batches);

  const at::Tensor hidden = local_->embed(in);
  compute_seconds_ += seconds_since(start);
  const at::ScalarType dtype = hidden.scalar_type();
  const std::int64_t hidden_size = hidden.size(2);
  const int n = world_.size();
  if (n == 1) {
    at::Tensor logits = local_->head(local_->layers(hidden, in, cache, mine.begin, mine.end));
    step_seconds_ += seconds_since(start);
    compute_seconds_ = step_seconds_;
    return logits;
  }
  const std::string control = json{
      {"op", "step"},
      {"cache", cache.id()},
      {"batch", batch},
      {"tokens", tokens},
      {"width", width},
      {"hidden", hidden_size},
      {"dtype", static_cast<int>(dtype)},
      {"micro", bounds},
      {"cache_ops",
       listener_->take()}}.dump();
  const at::Tensor positions = in.position_ids.to(at::kCPU).to(at::kLong).contiguous();
  const at::Tensor mask = in.attention_mask.to(at::kCPU).to(at::kLong).contiguous();
  for (int r = 1; r < n; ++r) {
    world_.send_bytes(control, r);
    world_.send(positions, r);
    world_.send(mask, r);
  }
  // The last stage's answers, one buffer per micro-batch, awaited from the start so that the
  // last rank never waits for rank 0 to finish sending (Note [Pipeline micro-batches]).
  std::vector<at::Tensor> back;
  std::vector<std::unique_ptr<World::Pending>> receives;
  back.reserve(bounds.size());  // irecv keeps a reference to its buffer
  for (std::size_t m = 0; m + 1 < bounds.size(); ++m) {
    back.push_back(at::empty({bounds[m + 1] - bounds[m], tokens, hidden_size},
                             at::TensorOptions().dtype(dtype)));
    receives.push_back(world_.irecv(back.back(), n - 1, static_cast<int>(m) + 1));
  }
  run_micro_batches(world_, *local_, in, hidden, cache, mine, bounds, dtype, hidden_size,
                    compute_seconds_);
  for (auto& r : receives) r->wait();
  const Clock::time_point computing = Clock::now();
  at::Tensor logits = local_->head(back.size() == 1 ? back.front() : at::cat(back, 0));
  compute_seconds_ += seconds_since(computing);
  step_seconds_ += seconds_since(start);
  return logits;
}

void serve_stage(World& world, models::CausalLM& local, const PipelineLayout& layout) {
  const int rank = world.rank();
  const int n = world.size();
  FERRY_CHECK(rank > 0, InvalidArgument, "serve_stage runs on ranks > 0; rank 0 owns the Pipeline");
  check_layout(layout, local.config().n_layers, n);
  const models::StageRange& mine = layout.stages[static_cast<std::size_t>(rank)];
  const auto n_layers = static_cast<std::size_t>(local.config().n_layers);
  std::unordered_map<std::uint64_t, models::KvCache> caches;
  auto cache_of = [&](std::uint64_t id) -> models::KvCache& {
    auto it = caches.find(id);
    if (it == caches.end()) it = caches.emplace(id, models::KvCache(n_layers)).first;
    return it->second;
  };
  world.send_bytes(kReady, 0);
  double compute_seconds = 0;  // reported to rank 0 at the end
  for (;;) {
    const std::string text = world.recv_bytes(0, kIdleWait);
    json control;
    try {
      control = json::parse(text);
    } catch (const json::exception& e) {
      throw DistributedError(
          fmt::format("rank {}: malformed control message from rank 0: {}", rank, e.what()));
    }
    for (const json& op : control.at("cache_ops")) {
      if (op.contains("free")) {
        caches.erase(op.at("free").get<std::uint64_t>());
      } else if (op.contains("keep")) {
        const auto rows = op.at("rows").get<std::vector<std::int64_t>>();
        cache_of(op.at("keep").get<std::uint64_t>())
            .keep(at::tensor(rows, at::kLong), op.at("first").get<std::int64_t>(),
                  op.at("width").get<std::int64_t>());
      } else if (op.contains("append")) {
        models::KvCache& from = cache_of(op.at("from").get<std::uint64_t>());
        cache_of(op.at("append").get<std::uint64_t>())
            .append_rows(from, op.at("pad_self").get<std::int64_t>(),
                         op.at("pad_other").get<std::int64_t>());
      }
    }
    const std::string what = control.at("op").get<std::string>();
    if (what == "finish") {
      if (control.value("report", false)) world.send_bytes(fmt::format("{}", compute_seconds), 0);
      return;
    }
    FERRY_CHECK(what == "step", DistributedError, "rank {}: unknown control message '{}'", rank,
                what);
    const auto batch = control.at("batch").get<std::int64_t>();
    const auto tokens = control.at("tokens").get<std::int64_t>();
    const auto width = control.at("width").get<std::int64_t>();
    const auto hidden_size = control.at("hidden").get<std::int64_t>();
    const auto dtype = static_cast<at::ScalarType>(control.at("dtype").get<int>());
    const auto bounds = control.at("micro").get<std::vector<std::int64_t>>();
    at::Tensor positions = at::empty({batch, tokens}, at::kLong);
    at::Tensor mask = at::empty({batch, width}, at::kLong);
    world.recv(positions, 0);
    world.recv(mask, 0);
    models::KvCache& cache = cache_of(control.at("cache").get<std::uint64_t>());
    check_cache_in_step(cache, mine, width - tokens, rank);
    const models::StepInput in{.input_ids = at::zeros({batch, tokens}, at::kLong),
                               .position_ids = positions,
                               .attention_mask = mask};
    run_micro_batches(world, local, in, at::Tensor(), cache, mine, bounds, dtype, hidden_size,
                      compute_seconds);
  }
}

void report_stage_failure(World& world, const std::exception& error) noexcept {
  try {
    world.send_bytes(std::string(kFailed) + error.what(), 0);
  } catch (const std::exception& e) {
    log_warning("could not tell rank 0 that this stage failed ({}): {}", error.what(), e.what());
  } catch (...) {
  }
}

// Note [Pipeline rendezvous]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~
// Before any weight is read, the ranks agree on three things, each a World::agree that names the
// ranks that differ: the ferry version (the control messages and the stage split are ferry's
// own), the checkpoint (config.json's bytes, every tensor's name, dtype and shape, and the first
// bytes of each tensor's data, hashed),
// and the layout. Rank 0 decides the layout: every other rank sends it its capacity (its budgets
// without disk), rank 0 splits the layers by the stored bytes of the headers (so `ferry plan
// --world-size` shows the same split without LibTorch) and sends the layout back; the final
// agree confirms every rank holds the same one. Each rank then plans inside its stage with its
// own budgets, as a single process plans a whole model.
namespace {

std::uint64_t fnv1a(std::uint64_t h, std::string_view bytes) {
  for (const char c : bytes) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ULL;
  }
  return h;
}

std::filesystem::path folder_of(const std::filesystem::path& path) {
  return std::filesystem::is_directory(path) ? path : path.parent_path();
}

std::int64_t n_layers_of(const std::filesystem::path& folder) {
  return models::load_config(folder_of(folder)).n_layers;
}

}  // namespace

std::string checkpoint_fingerprint(const std::filesystem::path& folder) {
  const std::filesystem::path dir = folder_of(folder);
  const models::ModelConfig config = models::load_config(dir);
  std::uint64_t h = fnv1a(14695981039346656037ULL, io::read_text_file(dir / "config.json"));
  const std::shared_ptr<const io::TensorSource> source = io::open_checkpoint(dir);
  std::vector<std::string> names = source->names();
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    const std::optional<TensorInfo> info = source->find(name);
    if (!info) continue;
    h = fnv1a(h, fmt::format("{}|{}|{};", name, safetensors_name(info->dtype),
                             fmt::join(info->shape, ",")));
    // A sample of the weights themselves (their first bytes): checkpoints of one shape but other
    // weights differ too, for one small read per tensor.
    if (const std::optional<io::FileExtent> extent = source->extent(name)) {
      std::ifstream in(extent->file, std::ios::binary);
      std::string sample(static_cast<std::size_t>(std::min<std::uint64_t>(extent->length, 64)),
                         '\0');
      in.seekg(static_cast<std::streamoff>(extent->offset));
      in.read(sample.data(), static_cast<std::streamsize>(sample.size()));
      FERRY_CHECK(in.good(), IoError, "cannot read tensor {} from {}", name, extent->file.string());
      h = fnv1a(h, sample);
    }
  }
  return fmt::format("{}, {} layers, {} tensors, fingerprint {:016x}", config.model_type,
                     config.n_layers, names.size(), h);
}

std::uint64_t stage_capacity(const models::LoadModelOptions& options) {
  // The same figure `ferry plan --world-size` splits with (plan::stage_capacity).
  return plan::stage_capacity(options.dispatch.max_memory ? *options.dispatch.max_memory
                                                          : plan::get_max_memory());
}

PipelineLayout agree_on_pipeline(World& world, const std::filesystem::path& folder,
                                 const models::LoadModelOptions& options) {
  world.agree("ferry version", "ferry " FERRY_VERSION);
  world.agree("checkpoint", checkpoint_fingerprint(folder));
  const std::uint64_t mine = stage_capacity(options);
  const int n = world.size();
  std::string layout_text;
  if (world.rank() == 0) {
    std::vector<std::uint64_t> capacities{mine};
    for (int r = 1; r < n; ++r) capacities.push_back(std::stoull(world.recv_bytes(r)));
    const std::shared_ptr<const io::TensorSource> source = io::open_checkpoint(folder_of(folder));
    std::vector<TensorInfo> infos;
    for (const std::string& name : source->names()) {
      if (std::optional<TensorInfo> info = source->find(name)) infos.push_back(std::move(*info));
    }
    const plan::StageSizes sizes = plan::stage_sizes(infos);
    const std::int64_t n_layers = n_layers_of(folder);
    FERRY_CHECK(static_cast<std::int64_t>(sizes.layers.size()) == n_layers, InvalidArgument,
                "{}: the checkpoint's numbered blocks ({}N) are {}, config.json says {} layers",
                folder.string(), sizes.layers_prefix, sizes.layers.size(), n_layers);
    const plan::StageSplit split = plan::split_stages(sizes.layers, sizes.ends, capacities);
    PipelineLayout layout;
    for (std::size_t r = 0; r < split.ranges.size(); ++r) {
      layout.stages.push_back(
          {.begin = split.ranges[r].begin, .end = split.ranges[r].end, .ends = r == 0});
    }
    layout_text = layout.fingerprint();
    for (int r = 1; r < n; ++r) world.send_bytes(layout_text, r);
  } else {
    world.send_bytes(std::to_string(mine), 0);
    layout_text = world.recv_bytes(0);
  }
  world.agree("pipeline layout", layout_text);
  PipelineLayout layout;
  try {
    for (const json& s : json::parse(layout_text)) {
      layout.stages.push_back({.begin = s.at(0).get<std::int64_t>(),
                               .end = s.at(1).get<std::int64_t>(),
                               .ends = s.at(2).get<bool>()});
    }
  } catch (const json::exception& e) {
    throw DistributedError(
        fmt::format("rank {}: malformed pipeline layout from rank 0: {}", world.rank(), e.what()));
  }
  return layout;
}

}  // namespace ferry::engine
