#pragma once
// Generation for many sequences at once: continuous batching over one loaded model.
//
//   engine::Engine engine(model, {.max_batch = 16, .context = 2048, .decode = detokenize});
//   engine.start();                                   // the schedule runs on its own thread
//   engine::RequestHandle r = engine.submit(prompt_ids, {.max_new_tokens = 64});
//   while (auto event = r.next(std::chrono::seconds(1))) { ... }   // tokens, then kFinished
//
// Every sequence has its own positions, KV cache rows, sampler and stop conditions; sequences
// join the running batch at the next step and leave it when they finish (Note [Continuous
// batching] in src/engine/engine.cpp). A step decodes one token for every running sequence in
// one forward, so offloaded weights are streamed once per step for the whole batch, and prefills
// at most `prefill_chunk` tokens of one waiting prompt.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ferry/core/error.h"
#include "ferry/models/causal_lm.h"
#include "ferry/models/sampling.h"

namespace ferry::engine {

// The waiting queue is full: retry later (HTTP 429/503 with Retry-After).
class QueueFull : public Error {
  using Error::Error;
};

struct RequestOptions {
  std::int64_t max_new_tokens = 16;
  models::SamplingOptions sampling;         // greedy by default; seeded per request
  std::vector<std::int64_t> eos_token_ids;  // the sequence stops after producing one (kept)
  // The sequence stops once its text contains one; the text from the stop string on is never
  // emitted (OpenAI's `stop`). Needs EngineOptions::decode.
  std::vector<std::string> stop_strings;
};

struct Usage {
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
};

struct Event {
  enum class Kind { kToken, kFinished };
  Kind kind = Kind::kToken;
  // kToken: the id chosen. Text may lag tokens: bytes that could still become part of a stop
  // string or of an incomplete UTF-8 character are held back until they cannot.
  std::int64_t token = -1;
  std::string text;  // new text (kToken), or the rest released at the end (kFinished)
  // kFinished: "eos", "stop_string", "length" (max_new_tokens), "context" (the context is full),
  // "cancelled", or "error" (with `error`).
  std::string finish_reason;
  std::string error;
  Usage usage;  // so far
};

namespace detail {
struct Sequence;
}

// A submitted request. Events are queued for the handle; its owner takes them with next().
// Destroying the last handle of a running request cancels it.
class RequestHandle {
 public:
  RequestHandle() = default;
  RequestHandle(RequestHandle&&) noexcept = default;
  RequestHandle& operator=(RequestHandle&&) noexcept;
  RequestHandle(const RequestHandle&) = delete;
  RequestHandle& operator=(const RequestHandle&) = delete;
  ~RequestHandle();

  // The next event, waiting at most `timeout`; nullopt on timeout or after kFinished was taken.
  std::optional<Event> next(std::chrono::milliseconds timeout);
  // Asks the engine to drop the request; it ends with kFinished "cancelled" at the next step.
  void cancel();
  bool finished() const;
  std::uint64_t id() const;
  // The generated ids so far (complete after kFinished).
  std::vector<std::int64_t> tokens() const;

 private:
  friend class Engine;
  explicit RequestHandle(std::shared_ptr<detail::Sequence> s) : s_(std::move(s)) {}
  std::shared_ptr<detail::Sequence> s_;
};

struct EngineOptions {
  std::int64_t max_batch = 8;   // sequences decoded together
  std::int64_t max_queue = 64;  // requests waiting for a place in the batch; more: QueueFull
  // Tokens per sequence (prompt + generated) the KV cache holds; 0: the model's positions. The
  // plan reserves max_batch × context tokens of KV cache (models::RunShape).
  std::int64_t context = 0;
  std::int64_t prefill_chunk = 256;  // prompt tokens per step
  // Text of generated ids (special tokens skipped); needed for text events and stop strings.
  std::function<std::string(const std::vector<std::int64_t>&)> decode;
};

struct EngineStats {
  std::int64_t waiting = 0;  // queued, not yet prefilling
  std::int64_t running = 0;  // prefilling or decoding
  std::int64_t last_batch = 0;
  std::uint64_t steps = 0;
  std::uint64_t prompt_tokens = 0;     // prefilled, total
  std::uint64_t generated_tokens = 0;  // total
  std::uint64_t finished = 0;
  std::uint64_t kv_cache_bytes = 0;  // held now
  double busy_seconds = 0;           // time spent in steps
};

class Engine {
 public:
  // `model` outlives the engine. Throws InvalidArgument for max_batch, max_queue or
  // prefill_chunk < 1, or a context above the model's positions.
  Engine(models::CausalLM& model, EngineOptions options);
  ~Engine();  // stops the thread; unfinished requests end "cancelled"
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Thread-safe. Throws InvalidArgument (empty prompt, an id outside the vocabulary, prompt +
  // max_new_tokens above the context, stop strings without decode, bad sampling options) and
  // QueueFull; after stop(), InvalidArgument.
  RequestHandle submit(std::vector<std::int64_t> prompt, RequestOptions options);

  // Runs the schedule on a background thread until stop().
  void start();
  // Stops accepting requests; with `drain`, lets running and waiting ones finish, else cancels
  // them; joins the thread. Idempotent.
  void stop(bool drain);
  // One scheduling step on the caller's thread (without start()): returns false when there was
  // nothing to do. A model error ends every running request with reason "error".
  bool step();

  EngineStats stats() const;
  const EngineOptions& options() const noexcept { return options_; }

 private:
  struct State;
  models::CausalLM& model_;
  EngineOptions options_;
  std::unique_ptr<State> state_;
};

}  // namespace ferry::engine
