#pragma once
// A model spread over the ranks of a World as pipeline stages (issue 16, Note [Pipeline stages]
// in src/models/blocks/decoder.cpp, Note [Pipeline caches] in src/engine/pipeline.cpp).
//
// Rank 0 holds the embeddings, the first layers and the head; rank r > 0 holds a contiguous
// range of the following layers. Rank 0 runs the front end (tokenizer, sampling, `run`,
// `serve`): its Pipeline is a models::CausalLM, so models::generate and the Engine use it as
// they use a local model. Each step, rank 0 tells every other rank what to run, hidden states
// travel 0 → 1 → … → N-1 → 0, and rank 0 computes the logits. Ranks > 0 call serve_stage until
// rank 0 ends the pipeline.

#include <ATen/ATen.h>

#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "ferry/engine/world.h"
#include "ferry/models/causal_lm.h"
#include "ferry/models/registry.h"

namespace ferry::engine {

// Which layers each rank holds: ranges[r] for rank r, contiguous and in order, covering every
// decoder layer; rank 0 also holds the ends.
struct PipelineLayout {
  std::vector<models::StageRange> stages;
  // One line per rank, as the planner and the CLI show it.
  std::string describe() const;
  // The layout as text every rank compares at rendezvous (World::agree).
  std::string fingerprint() const;
};

// Throws InvalidArgument unless `layout` covers layers [0, n_layers) in order, one range per
// rank of `world_size`, rank 0 with the ends.
void check_layout(const PipelineLayout& layout, std::int64_t n_layers, int world_size);

struct PipelineOptions {
  // Parts a step's rows cross the stages in (Note [Pipeline micro-batches]): 1 runs the batch
  // whole; more let stages work at once on parts of a batch, at the cost of reading each stage's
  // weights once per part.
  int micro_batches = 1;
};

// Rank 0's model: its own stage (loaded with LoadModelOptions::stage = layout.stages[0]) and
// the other ranks, reached through `world`. Not thread-safe (one step at a time, as any model).
class Pipeline final : public models::CausalLM {
 public:
  // Waits (up to `ready_timeout`: loading a stage may take long) until every other rank has
  // loaded its stage and called serve_stage; a rank that reported a failure to load
  // (report_stage_failure) is a DistributedError naming it and its message.
  Pipeline(World& world, std::shared_ptr<models::CausalLM> local, PipelineLayout layout,
           PipelineOptions options = {},
           std::chrono::milliseconds ready_timeout = std::chrono::hours(1));
  // Ends the pipeline (finish()) if not done yet; errors are logged, not thrown.
  ~Pipeline() override;

  nn::Module& module() override { return local_->module(); }
  const models::ModelConfig& config() const override { return local_->config(); }
  std::string decoder_layer_class() const override { return local_->decoder_layer_class(); }
  std::vector<std::string> no_split_classes() const override { return local_->no_split_classes(); }
  std::vector<std::string> on_demand_classes() const override {
    return local_->on_demand_classes();
  }
  at::Tensor step(const models::StepInput& input, models::KvCache& cache) override;

  // Tells every other rank to return from serve_stage. Idempotent.
  void finish();

  // Seconds in steps overall, and rank 0's computing in them.
  double step_seconds() const noexcept { return step_seconds_; }
  double compute_seconds() const noexcept { return compute_seconds_; }
  // After finish(): each rank's seconds computing its stage (rank 0's first). With one
  // micro-batch the stages run one after another, so step_seconds minus their sum is the time
  // spent passing data between ranks.
  const std::vector<double>& stage_compute_seconds() const noexcept {
    return stage_compute_seconds_;
  }

 private:
  class Listener;
  World& world_;
  std::shared_ptr<models::CausalLM> local_;
  PipelineLayout layout_;
  PipelineOptions options_;
  std::shared_ptr<Listener> listener_;
  bool finished_ = false;
  double compute_seconds_ = 0;
  double step_seconds_ = 0;
  std::vector<double> stage_compute_seconds_;
};

// What a rank > 0 does: runs the steps rank 0 sends through `local` (loaded with
// LoadModelOptions::stage = layout.stages[world.rank()]) until rank 0 finishes the pipeline.
// Throws DistributedError when rank 0 or a neighbour fails or times out, and what the model
// throws.
// Between steps a stage waits for rank 0 for as long as rank 0 lives (a server may be idle for
// days); within a step, every wait has the World's timeout.
void serve_stage(World& world, models::CausalLM& local, const PipelineLayout& layout);

// What a rank > 0 calls when it cannot serve its stage (loading failed): tells rank 0, whose
// Pipeline constructor then fails naming this rank and `error`. Never throws.
void report_stage_failure(World& world, const std::exception& error) noexcept;

// ---- rendezvous (Note [Pipeline rendezvous]) -------------------------------------------------

// A short text that differs when config.json or any tensor's name, dtype or shape differs:
// "llama, 24 layers, 219 tensors, fingerprint 9f2c…".
std::string checkpoint_fingerprint(const std::filesystem::path& folder);

// What a rank brings to the split: its memory budgets without disk (the --max-memory it was
// given, else what the machine has).
std::uint64_t stage_capacity(const models::LoadModelOptions& options);

// Every rank calls this after World::join and before loading: checks that all ranks run the same
// ferry version on the same checkpoint (DistributedError naming the ranks that differ), gathers
// every rank's stage_capacity on rank 0, splits the layers (plan::split_stages) and gives every
// rank the same layout (agreed). `options` are this rank's load options.
PipelineLayout agree_on_pipeline(World& world, const std::filesystem::path& folder,
                                 const models::LoadModelOptions& options);

}  // namespace ferry::engine
