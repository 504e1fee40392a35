#include "ferry/engine/engine.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "ferry/core/log.h"
#include "ferry/models/generate.h"
#include "ferry/models/kv_cache.h"

// Note [Continuous batching]
// The running sequences are the rows of one batch: one KV cache whose layers hold
// [rows, kv_heads, T, head_dim] and one attention mask [rows, T]. Each row's real positions are
// contiguous and right-aligned (left padding, mask 0), exactly as models::generate pads a batch
// of prompts, so the causal and sliding-window masks, which compare columns, stay right.
//
// A step:
//   1. drops cancelled rows;
//   2. decodes one token for every running row in one forward (offloaded weights are streamed
//      once for the whole batch), samples each row with its own sampler and stop conditions,
//      and drops the rows that finished, trimming leading columns that became padding in every
//      row;
//   3. prefills what was admitted: the waiting prompts that fit one chunk (prefill_chunk tokens)
//      together, in one left-padded forward, as models::generate prefills a batch; a longer
//      prompt alone, one chunk per step, in a cache of its own (chunk boundaries depend on the
//      prompt alone, so it gets the same numbers whatever else runs). A prompt whose prefill is
//      done samples its first token, and its cache rows join the batch: the narrower side is
//      padded on the left.
// A burst of requests is therefore admitted in one step and one extra pass over the weights,
// not one pass per request.
// A sequence is admitted (waiting → prefilling) only while the batch has a free row, so the KV
// cache never holds more than max_batch × context tokens: the reserve the plan made.

namespace ferry::engine {
namespace detail {

struct Sequence {
  std::uint64_t id = 0;
  std::vector<std::int64_t> prompt;
  RequestOptions options;

  // Engine thread only.
  std::optional<models::Sampler> sampler;
  std::vector<std::vector<std::int64_t>> seen;  // {prompt + generated}, for the sampler
  std::int64_t prefilled = 0;
  std::unique_ptr<models::KvCache> cache;  // while prefilling
  std::size_t released = 0;                // bytes of text emitted

  // Shared with the handle.
  mutable std::mutex m;
  std::condition_variable cv;
  std::deque<Event> events;
  std::vector<std::int64_t> generated;
  bool finished = false;     // kFinished queued
  bool final_taken = false;  // kFinished taken by next()
  bool cancel_asked = false;
};

}  // namespace detail

using detail::Sequence;
using SequencePtr = std::shared_ptr<Sequence>;

namespace {

using Clock = std::chrono::steady_clock;

// Bytes at the end of `text` that start a UTF-8 character not complete yet.
std::size_t incomplete_utf8_tail(std::string_view text) {
  const std::size_t n = text.size();
  for (std::size_t back = 1; back <= std::min<std::size_t>(3, n); ++back) {
    const auto c = static_cast<unsigned char>(text[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    std::size_t need = 1;
    if ((c & 0xE0) == 0xC0)
      need = 2;
    else if ((c & 0xF0) == 0xE0)
      need = 3;
    else if ((c & 0xF8) == 0xF0)
      need = 4;
    return need > back ? back : 0;
  }
  return 0;
}

// The longest suffix of `text` that is a proper prefix of a stop string: it may still become one.
std::size_t stop_prefix_tail(std::string_view text, const std::vector<std::string>& stops) {
  std::size_t hold = 0;
  for (const auto& s : stops) {
    for (std::size_t k = std::min(s.size() - 1, text.size()); k > hold; --k) {
      if (text.substr(text.size() - k) == std::string_view(s).substr(0, k)) {
        hold = k;
        break;
      }
    }
  }
  return hold;
}

at::Tensor pad_left(const at::Tensor& t, std::int64_t dim, std::int64_t n) {
  if (n == 0) return t;
  std::vector<std::int64_t> sizes = t.sizes().vec();
  sizes[static_cast<std::size_t>(dim)] = n;
  return at::cat({at::zeros(sizes, t.options()), t}, dim);
}

// Keeps `rows` of a cache with left padding (mask [rows, T]) in that order, and drops the leading
// columns that are padding in every row kept; `rows` is not empty.
void keep_cache_rows(models::KvCache& cache, at::Tensor& mask,
                     const std::vector<std::int64_t>& rows) {
  const at::Tensor index = at::tensor(rows, at::kLong);
  mask = mask.index_select(0, index);
  const std::int64_t first = (mask.sum(0) > 0).to(at::kLong).argmax().item<std::int64_t>();
  const std::int64_t width = mask.size(1) - first;
  mask = mask.narrow(1, first, width).contiguous();
  cache.keep(index, first, width);
}

}  // namespace

struct Engine::State {
  // Guarded by m.
  mutable std::mutex m;
  std::condition_variable wake;  // the loop thread waits here for work
  std::deque<SequencePtr> waiting;
  bool accepting = true;
  bool stopping = false;
  std::uint64_t next_id = 1;
  EngineStats stats;

  std::thread thread;
  std::mutex step_mutex;  // one step at a time

  // Engine thread (under step_mutex) only.
  SequencePtr prefilling;          // a prompt longer than a chunk, prefilled chunk by chunk
  std::vector<SequencePtr> group;  // admitted short prompts, prefilled together this step
  std::vector<SequencePtr> rows;   // the batch, in cache row order
  std::unique_ptr<models::KvCache> cache;
  at::Tensor mask;  // [rows, T] int64
};

// ----- RequestHandle -----

RequestHandle& RequestHandle::operator=(RequestHandle&& other) noexcept {
  if (this != &other) {
    if (s_) cancel();
    s_ = std::move(other.s_);
  }
  return *this;
}

RequestHandle::~RequestHandle() {
  if (s_) cancel();
}

std::optional<Event> RequestHandle::next(std::chrono::milliseconds timeout) {
  if (!s_) return std::nullopt;
  std::unique_lock lock(s_->m);
  if (!s_->cv.wait_for(lock, timeout, [&] { return !s_->events.empty() || s_->final_taken; }))
    return std::nullopt;
  if (s_->events.empty()) return std::nullopt;
  Event e = std::move(s_->events.front());
  s_->events.pop_front();
  if (e.kind == Event::Kind::kFinished) s_->final_taken = true;
  return e;
}

void RequestHandle::cancel() {
  if (!s_) return;
  std::lock_guard lock(s_->m);
  s_->cancel_asked = true;
}

bool RequestHandle::finished() const {
  if (!s_) return true;
  std::lock_guard lock(s_->m);
  return s_->finished;
}

std::uint64_t RequestHandle::id() const { return s_ ? s_->id : 0; }

std::vector<std::int64_t> RequestHandle::tokens() const {
  if (!s_) return {};
  std::lock_guard lock(s_->m);
  return s_->generated;
}

// ----- Engine -----

namespace {

void push_event(Sequence& s, Event e) {
  {
    std::lock_guard lock(s.m);
    if (s.finished) return;
    if (e.kind == Event::Kind::kFinished) s.finished = true;
    e.usage = {.prompt_tokens = static_cast<std::int64_t>(s.prompt.size()),
               .completion_tokens = static_cast<std::int64_t>(s.generated.size())};
    s.events.push_back(std::move(e));
  }
  s.cv.notify_all();
}

bool cancel_asked(const Sequence& s) {
  std::lock_guard lock(s.m);
  return s.cancel_asked;
}

void finish(Sequence& s, std::string reason, std::string text = {}, std::string error = {}) {
  Event e{.kind = Event::Kind::kFinished, .text = std::move(text)};
  e.finish_reason = std::move(reason);
  e.error = std::move(error);
  push_event(s, std::move(e));
}

}  // namespace

Engine::Engine(models::CausalLM& model, EngineOptions options)
    : model_(model), options_(std::move(options)), state_(std::make_unique<State>()) {
  const std::int64_t positions = model_.config().max_position_embeddings;
  FERRY_CHECK(options_.max_batch >= 1, InvalidArgument, "engine: max_batch must be >= 1, got {}",
              options_.max_batch);
  FERRY_CHECK(options_.max_queue >= 0, InvalidArgument, "engine: max_queue must be >= 0, got {}",
              options_.max_queue);
  FERRY_CHECK(options_.prefill_chunk >= 1, InvalidArgument,
              "engine: prefill_chunk must be >= 1, got {}", options_.prefill_chunk);
  FERRY_CHECK(options_.context >= 0 && options_.context <= positions, InvalidArgument,
              "engine: context {} is above the model's {} positions ({})", options_.context,
              positions, model_.config().file.string());
  if (options_.context == 0) options_.context = positions;
}

Engine::~Engine() {
  try {
    stop(false);
  } catch (const std::exception& e) {
    log_warning("engine: stopping failed: {}", e.what());
  }
}

RequestHandle Engine::submit(std::vector<std::int64_t> prompt, RequestOptions options) {
  const models::ModelConfig& c = model_.config();
  FERRY_CHECK(!prompt.empty(), InvalidArgument, "the prompt is empty");
  for (std::int64_t id : prompt) {
    FERRY_CHECK(id >= 0 && id < c.vocab_size, InvalidArgument,
                "prompt token id {} is outside the vocabulary [0, {}) of {}", id, c.vocab_size,
                c.file.string());
  }
  FERRY_CHECK(options.max_new_tokens >= 1, InvalidArgument, "max_tokens must be >= 1, got {}",
              options.max_new_tokens);
  const auto length = static_cast<std::int64_t>(prompt.size());
  if (length + options.max_new_tokens > options_.context) {
    throw InvalidArgument(
        fmt::format("the prompt ({} tokens) plus max_tokens ({}) is more than the context of {} "
                    "tokens",
                    length, options.max_new_tokens, options_.context),
        ErrorFields{.path = "max_tokens",
                    .expected = fmt::format("prompt + max_tokens <= {}", options_.context),
                    .actual = std::to_string(length + options.max_new_tokens)});
  }
  FERRY_CHECK(options.stop_strings.empty() || options_.decode, InvalidArgument,
              "stop strings need the engine's decode function");
  for (const auto& s : options.stop_strings)
    FERRY_CHECK(!s.empty(), InvalidArgument, "a stop string is empty");

  auto s = std::make_shared<Sequence>();
  s->sampler.emplace(options.sampling);  // validates the sampling options
  s->prompt = std::move(prompt);
  s->options = std::move(options);
  s->seen = {s->prompt};
  {
    std::lock_guard lock(state_->m);
    FERRY_CHECK(state_->accepting, InvalidArgument, "the engine is stopping");
    if (static_cast<std::int64_t>(state_->waiting.size()) >= options_.max_queue) {
      throw QueueFull(fmt::format("{} requests are waiting already (max_queue {}); retry later",
                                  state_->waiting.size(), options_.max_queue));
    }
    s->id = state_->next_id++;
    state_->waiting.push_back(s);
    state_->stats.waiting = static_cast<std::int64_t>(state_->waiting.size());
  }
  state_->wake.notify_all();
  return RequestHandle(s);
}

// Appends `token` to `s`, emits it with the text that became final, and returns the finish
// reason if the sequence ends here ("" otherwise).
static std::string take_token(Sequence& s, std::int64_t token, const EngineOptions& options) {
  {
    std::lock_guard lock(s.m);
    s.generated.push_back(token);
  }
  s.seen[0].push_back(token);
  const RequestOptions& o = s.options;
  std::string reason;
  std::string text;
  std::size_t end = 0;  // bytes of text final now
  if (options.decode) {
    text = options.decode(s.generated);
    end = text.size();
    for (const auto& stop : o.stop_strings) {
      const std::size_t at = text.find(stop);
      if (at != std::string::npos && (reason.empty() || at < end)) {
        reason = "stop_string";
        end = at;
      }
    }
  }
  if (reason.empty()) {
    if (std::find(o.eos_token_ids.begin(), o.eos_token_ids.end(), token) != o.eos_token_ids.end())
      reason = "eos";
    else if (static_cast<std::int64_t>(s.generated.size()) >= o.max_new_tokens)
      reason = "length";
  }
  if (reason.empty() && options.decode) {
    end -= std::max(incomplete_utf8_tail(text), stop_prefix_tail(text, o.stop_strings));
  }
  std::string delta;
  if (end > s.released && end <= text.size()) {
    delta = text.substr(s.released, end - s.released);
    s.released = end;
  }
  if (reason.empty()) {
    push_event(s, Event{.kind = Event::Kind::kToken, .token = token, .text = std::move(delta)});
  } else {
    push_event(s, Event{.kind = Event::Kind::kToken, .token = token});
    finish(s, reason, std::move(delta));
  }
  return reason;
}

bool Engine::step() {
  State& st = *state_;
  std::lock_guard step_lock(st.step_mutex);
  // Note [Inference mode]
  const c10::InferenceMode inference;
  const auto start = Clock::now();
  bool worked = false;

  // Admission, and cancellations of waiting requests.
  {
    std::lock_guard lock(st.m);
    for (auto it = st.waiting.begin(); it != st.waiting.end();) {
      if (cancel_asked(**it)) {
        finish(**it, "cancelled");
        ++st.stats.finished;
        it = st.waiting.erase(it);
        worked = true;
      } else {
        ++it;
      }
    }
    // Free rows take waiting prompts in order: a run of prompts that fit one chunk is prefilled
    // together in one forward; a longer prompt alone, chunk by chunk.
    auto free_rows = [&] {
      return options_.max_batch - static_cast<std::int64_t>(st.rows.size()) -
             (st.prefilling ? 1 : 0) - static_cast<std::int64_t>(st.group.size());
    };
    while (!st.prefilling && !st.waiting.empty() && free_rows() > 0) {
      const bool short_prompt =
          static_cast<std::int64_t>(st.waiting.front()->prompt.size()) <= options_.prefill_chunk;
      if (!short_prompt && !st.group.empty()) break;
      SequencePtr next = st.waiting.front();
      st.waiting.pop_front();
      if (short_prompt) {
        st.group.push_back(std::move(next));
      } else {
        st.prefilling = std::move(next);
        st.prefilling->cache =
            std::make_unique<models::KvCache>(static_cast<std::size_t>(model_.config().n_layers));
        st.prefilling->cache->set_max_positions(options_.context);
      }
    }
    st.stats.waiting = static_cast<std::int64_t>(st.waiting.size());
  }

  std::uint64_t prompt_tokens = 0;
  std::uint64_t generated = 0;
  std::uint64_t finished = 0;
  std::vector<SequencePtr> failed;
  try {
    // Cancelled rows leave before the forward.
    std::vector<std::int64_t> keep;
    std::vector<SequencePtr> kept;
    for (std::size_t r = 0; r < st.rows.size(); ++r) {
      if (cancel_asked(*st.rows[r])) {
        finish(*st.rows[r], "cancelled");
        ++finished;
      } else {
        keep.push_back(static_cast<std::int64_t>(r));
        kept.push_back(st.rows[r]);
      }
    }
    for (auto it = st.group.begin(); it != st.group.end();) {
      if (cancel_asked(**it)) {
        finish(**it, "cancelled");
        ++finished;
        it = st.group.erase(it);
        worked = true;
      } else {
        ++it;
      }
    }
    if (st.prefilling && cancel_asked(*st.prefilling)) {
      finish(*st.prefilling, "cancelled");
      ++finished;
      st.prefilling.reset();
      worked = true;
    }

    auto keep_rows = [&](const std::vector<std::int64_t>& rows_kept,
                         std::vector<SequencePtr> seqs) {
      if (rows_kept.size() == st.rows.size()) return;
      worked = true;
      st.rows = std::move(seqs);
      if (st.rows.empty()) {
        st.cache.reset();
        st.mask = at::Tensor();
        return;
      }
      keep_cache_rows(*st.cache, st.mask, rows_kept);
    };
    keep_rows(keep, std::move(kept));

    // Rows [rows, T] of `cache` (mask [rows, T], left padding) join the batch: the narrower
    // side is padded on the left.
    auto join = [&](std::unique_ptr<models::KvCache> cache, const at::Tensor& mask,
                    std::vector<SequencePtr> seqs) {
      const std::int64_t width = st.rows.empty() ? 0 : st.mask.size(1);
      const std::int64_t pad_new = std::max<std::int64_t>(0, width - mask.size(1));
      const std::int64_t pad_old = std::max<std::int64_t>(0, mask.size(1) - width);
      if (st.rows.empty()) {
        st.cache = std::move(cache);
        st.mask = mask;
      } else {
        st.mask = at::cat({pad_left(st.mask, 1, pad_old), pad_left(mask, 1, pad_new)}, 0);
        st.cache->append_rows(*cache, pad_old, pad_new);
      }
      for (auto& seq : seqs) st.rows.push_back(std::move(seq));
    };

    // Decode one token for every row.
    if (!st.rows.empty()) {
      worked = true;
      const auto rows = static_cast<std::int64_t>(st.rows.size());
      at::Tensor ids = at::empty({rows, 1}, at::kLong);
      at::Tensor positions = at::empty({rows, 1}, at::kLong);
      for (std::int64_t r = 0; r < rows; ++r) {
        const Sequence& s = *st.rows[static_cast<std::size_t>(r)];
        ids[r][0] = s.seen[0].back();
        positions[r][0] = static_cast<std::int64_t>(s.seen[0].size()) - 1;
      }
      st.mask = at::cat({st.mask, at::ones({rows, 1}, at::kLong)}, 1);
      const at::Tensor logits = model_.step(
          {.input_ids = ids, .position_ids = positions, .attention_mask = st.mask}, *st.cache);
      std::vector<std::int64_t> still;
      std::vector<SequencePtr> still_seqs;
      for (std::int64_t r = 0; r < rows; ++r) {
        Sequence& s = *st.rows[static_cast<std::size_t>(r)];
        const at::Tensor row_logits = logits[r].select(0, logits.size(1) - 1).unsqueeze(0);
        const std::int64_t token = s.sampler->next(row_logits, s.seen)[0].item<std::int64_t>();
        ++generated;
        if (take_token(s, token, options_).empty()) {
          still.push_back(r);
          still_seqs.push_back(st.rows[static_cast<std::size_t>(r)]);
        } else {
          ++finished;
        }
      }
      st.stats.last_batch = rows;
      keep_rows(still, std::move(still_seqs));
    }

    // Prefill one chunk of the admitted prompt.
    if (st.prefilling) {
      worked = true;
      Sequence& s = *st.prefilling;
      const auto length = static_cast<std::int64_t>(s.prompt.size());
      const std::int64_t n = std::min(options_.prefill_chunk, length - s.prefilled);
      const at::Tensor ids =
          at::tensor(std::vector<std::int64_t>(s.prompt.begin() + s.prefilled,
                                               s.prompt.begin() + s.prefilled + n),
                     at::kLong)
              .unsqueeze(0);
      const at::Tensor positions = at::arange(s.prefilled, s.prefilled + n, at::kLong).unsqueeze(0);
      const at::Tensor mask = at::ones({1, s.prefilled + n}, at::kLong);
      at::Tensor logits;
      try {
        logits = model_.step({.input_ids = ids, .position_ids = positions, .attention_mask = mask},
                             *s.cache);
      } catch (const std::exception& e) {
        // Only this prompt's own cache is touched: the batch runs on.
        log_warning("engine: prefilling request {} failed: {}", s.id, e.what());
        finish(s, "error", {}, e.what());
        ++finished;
        st.prefilling.reset();
        logits = at::Tensor();
      }
      if (logits.defined()) {
        s.prefilled += n;
        prompt_tokens += static_cast<std::uint64_t>(n);
        if (s.prefilled == length) {
          SequencePtr joining = std::move(st.prefilling);
          const at::Tensor last = logits.select(1, logits.size(1) - 1);
          const std::int64_t token =
              joining->sampler->next(last, joining->seen)[0].item<std::int64_t>();
          ++generated;
          if (!take_token(*joining, token, options_).empty()) {
            ++finished;
          } else {
            join(std::move(joining->cache), at::ones({1, length}, at::kLong), {joining});
          }
        }
      }
    }

    // Prefill the admitted short prompts together, left-padded as models::generate pads a batch.
    if (!st.group.empty()) {
      worked = true;
      std::vector<SequencePtr> group = std::move(st.group);
      st.group.clear();
      const auto g = static_cast<std::int64_t>(group.size());
      std::vector<std::vector<std::int64_t>> prompts;
      for (const auto& q : group) prompts.push_back(q->prompt);
      models::StepInput prefill = models::left_padded_prefill(prompts);
      at::Tensor& mask = prefill.attention_mask;
      const std::int64_t longest = mask.size(1);
      auto cache =
          std::make_unique<models::KvCache>(static_cast<std::size_t>(model_.config().n_layers));
      cache->set_max_positions(options_.context);
      at::Tensor logits;
      try {
        logits = model_.step(prefill, *cache);
      } catch (const std::exception& e) {
        // Only the group's own cache is touched: the batch runs on.
        log_warning("engine: prefilling {} request(s) failed: {}", g, e.what());
        for (auto& q : group) {
          finish(*q, "error", {}, e.what());
          ++finished;
        }
        group.clear();
      }
      if (!group.empty()) {
        std::vector<std::int64_t> survivors;
        std::vector<SequencePtr> joining;
        for (std::int64_t r = 0; r < g; ++r) {
          Sequence& q = *group[static_cast<std::size_t>(r)];
          prompt_tokens += q.prompt.size();
          q.prefilled = static_cast<std::int64_t>(q.prompt.size());
          const at::Tensor last = logits[r].select(0, longest - 1).unsqueeze(0);
          const std::int64_t token = q.sampler->next(last, q.seen)[0].item<std::int64_t>();
          ++generated;
          if (take_token(q, token, options_).empty()) {
            survivors.push_back(r);
            joining.push_back(group[static_cast<std::size_t>(r)]);
          } else {
            ++finished;
          }
        }
        if (!joining.empty()) {
          // The survivors' rows, without leading columns that are padding in all of them.
          keep_cache_rows(*cache, mask, survivors);
          join(std::move(cache), mask, std::move(joining));
        }
      }
    }
  } catch (const std::exception& e) {
    // The batch's cache is in an unknown state: every running request ends with the error.
    log_warning("engine: a step failed: {}", e.what());
    for (auto& s : st.rows) failed.push_back(s);
    for (auto& s : st.group) failed.push_back(s);
    st.group.clear();
    st.rows.clear();
    st.cache.reset();
    st.mask = at::Tensor();
    for (auto& s : failed) {
      finish(*s, "error", {}, e.what());
      ++finished;
    }
    worked = true;
  }

  std::uint64_t kv_bytes = st.cache ? st.cache->size_bytes().value() : 0;
  if (st.prefilling && st.prefilling->cache) kv_bytes += st.prefilling->cache->size_bytes().value();
  {
    std::lock_guard lock(st.m);
    EngineStats& stats = st.stats;
    stats.running =
        static_cast<std::int64_t>(st.rows.size() + st.group.size()) + (st.prefilling ? 1 : 0);
    stats.prompt_tokens += prompt_tokens;
    stats.generated_tokens += generated;
    stats.finished += finished;
    stats.kv_cache_bytes = kv_bytes;
    if (worked) {
      ++stats.steps;
      stats.busy_seconds += std::chrono::duration<double>(Clock::now() - start).count();
    }
  }
  return worked;
}

void Engine::start() {
  std::lock_guard lock(state_->m);
  FERRY_CHECK(!state_->thread.joinable(), InvalidArgument, "engine: already started");
  FERRY_CHECK(state_->accepting, InvalidArgument, "engine: stopped");
  state_->thread = std::thread([this] {
    State& st = *state_;
    for (;;) {
      {
        std::unique_lock wait_lock(st.m);
        // Sleep while there is nothing to do; a running batch keeps the loop going.
        st.wake.wait_for(wait_lock, std::chrono::milliseconds(50), [&] {
          return st.stopping || !st.waiting.empty() || st.stats.running > 0;
        });
        if (st.stopping && st.waiting.empty() && st.stats.running == 0) return;
      }
      try {
        step();
      } catch (const std::exception& e) {
        // step() ends the requests a failed forward touched; anything else is logged.
        log_warning("engine: {}", e.what());
      }
    }
  });
}

void Engine::stop(bool drain) {
  State& st = *state_;
  {
    std::lock_guard lock(st.m);
    st.accepting = false;
    st.stopping = true;
    if (!drain) {
      for (auto& s : st.waiting) {
        std::lock_guard sl(s->m);
        s->cancel_asked = true;
      }
    }
  }
  if (!drain) {
    // Rows and the prefilling sequence are cancelled at the next step.
    std::lock_guard step_lock(st.step_mutex);
    for (auto& s : st.rows) {
      std::lock_guard sl(s->m);
      s->cancel_asked = true;
    }
    if (st.prefilling) {
      std::lock_guard sl(st.prefilling->m);
      st.prefilling->cancel_asked = true;
    }
    for (auto& s : st.group) {
      std::lock_guard sl(s->m);
      s->cancel_asked = true;
    }
  }
  st.wake.notify_all();
  if (st.thread.joinable()) {
    st.thread.join();
  } else {
    // Not started: finish what is left on this thread.
    while (step()) {
    }
  }
}

EngineStats Engine::stats() const {
  std::lock_guard lock(state_->m);
  return state_->stats;
}

}  // namespace ferry::engine
