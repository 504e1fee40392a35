#include "serve/metrics.h"

#include <fmt/format.h>

#include <iterator>

#include "ferry/core/memory.h"

namespace ferry::serve {
namespace {

// One metric family: its HELP and TYPE lines, then its samples.
void family(std::string& out, const char* name, const char* type, const char* help) {
  fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

template <class T>
void sample(std::string& out, const char* name, T value) {
  fmt::format_to(std::back_inserter(out), "{} {}\n", name, value);
}

template <class T>
void gauge(std::string& out, const char* name, const char* help, T value) {
  family(out, name, "gauge", help);
  sample(out, name, value);
}

template <class T>
void counter(std::string& out, const char* name, const char* help, T value) {
  family(out, name, "counter", help);
  sample(out, name, value);
}

}  // namespace

std::int64_t ServerMetrics::second_now() const {
  return std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - start_).count();
}

void ServerMetrics::count_answer(int status) {
  std::lock_guard lock(mutex_);
  ++answers_[status];
}

void ServerMetrics::count_finished(const std::string& reason) {
  std::lock_guard lock(mutex_);
  ++finished_[reason];
}

void ServerMetrics::count_tokens(std::uint64_t n) {
  const std::int64_t now = second_now();
  std::lock_guard lock(mutex_);
  const std::size_t i = static_cast<std::size_t>(now) % tokens_.size();
  if (bucket_second_[i] != now) {
    bucket_second_[i] = now;
    tokens_[i] = 0;
  }
  tokens_[i] += n;
}

void ServerMetrics::stream_opened() {
  std::lock_guard lock(mutex_);
  ++open_streams_;
}

void ServerMetrics::stream_closed() {
  std::lock_guard lock(mutex_);
  --open_streams_;
}

std::int64_t ServerMetrics::open_streams() const {
  std::lock_guard lock(mutex_);
  return open_streams_;
}

double ServerMetrics::tokens_per_second() const {
  // The current second is still filling: the window is the kRateWindow seconds before it (or as
  // many as the server has lived).
  const std::int64_t now = second_now();
  std::lock_guard lock(mutex_);
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < tokens_.size(); ++i) {
    const std::int64_t age = now - bucket_second_[i];
    if (age >= 1 && age <= kRateWindow) total += tokens_[i];
  }
  const std::int64_t seconds = std::min<std::int64_t>(now, kRateWindow);
  return seconds > 0 ? static_cast<double>(total) / static_cast<double>(seconds) : 0.0;
}

std::string ServerMetrics::render(const engine::EngineStats& e, const engine::EngineOptions& o,
                                  const std::optional<dispatch::PrefetchStats>& prefetch) const {
  std::string out;
  gauge(out, "ferry_queue_depth", "Requests waiting for a place in the batch.", e.waiting);
  gauge(out, "ferry_running_sequences", "Sequences prefilling or decoding.", e.running);
  gauge(out, "ferry_batch_size", "Sequences in the last engine step.", e.last_batch);
  gauge(out, "ferry_max_batch", "Sequences decoded together at most.", o.max_batch);
  gauge(out, "ferry_max_queue", "Requests that may wait; more are answered 429.", o.max_queue);
  counter(out, "ferry_engine_steps_total", "Engine steps run.", e.steps);
  counter(out, "ferry_engine_busy_seconds_total", "Seconds the engine spent in steps.",
          e.busy_seconds);
  counter(out, "ferry_prompt_tokens_total", "Prompt tokens prefilled.", e.prompt_tokens);
  counter(out, "ferry_generated_tokens_total", "Tokens generated.", e.generated_tokens);
  gauge(out, "ferry_tokens_per_second",
        "Generated tokens delivered to clients per second, over the last 10 seconds.",
        tokens_per_second());
  gauge(out, "ferry_kv_cache_bytes", "Bytes of KV cache held by running sequences.",
        e.kv_cache_bytes);
  const dispatch::PrefetchStats p = prefetch.value_or(dispatch::PrefetchStats{});
  counter(out, "ferry_disk_bytes_read_total",
          "Weight bytes streamed from disk-offloaded files (0 when nothing is offloaded).",
          p.bytes_read);
  counter(out, "ferry_disk_page_cache_bytes_total",
          "File bytes of large streamed tensors copied from the page cache.", p.page_cache_bytes);
  counter(out, "ferry_disk_direct_bytes_total",
          "File bytes of large streamed tensors read with O_DIRECT.", p.direct_bytes);
  counter(out, "ferry_disk_in_place_bytes_total",
          "Bytes of offloaded tensors used in place from the page cache, not read.",
          p.in_place_bytes);
  counter(out, "ferry_device_bytes_total", "Weight bytes copied to a non-CPU execution device.",
          p.bytes_to_device);
  gauge(out, "ferry_peak_rss_bytes",
        "Peak resident set size of the server, less the page cache used in place.",
        owned_peak_rss().value());
  gauge(out, "ferry_page_cache_in_place_bytes",
        "Clean page-cache pages of offloaded weights mapped in place (in RSS, not counted).",
        borrowed_pages().value());

  std::lock_guard lock(mutex_);
  gauge(out, "ferry_open_streams", "Streamed answers in progress.", open_streams_);
  family(out, "ferry_requests_total", "counter", "HTTP answers to API requests, by status.");
  for (const auto& [status, n] : answers_) {
    fmt::format_to(std::back_inserter(out), "ferry_requests_total{{status=\"{}\"}} {}\n", status,
                   n);
  }
  family(out, "ferry_requests_finished_total", "counter",
         "Generations ended, by finish reason (stop, length, cancelled, error).");
  for (const auto& [reason, n] : finished_) {
    fmt::format_to(std::back_inserter(out), "ferry_requests_finished_total{{reason=\"{}\"}} {}\n",
                   reason, n);
  }
  return out;
}

}  // namespace ferry::serve
