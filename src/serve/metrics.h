#pragma once
// What GET /metrics reports, in Prometheus' text format: the server's own counters (answers by
// status, requests by finish reason, tokens delivered per second) beside the engine's statistics
// and the bytes the prefetcher streamed from disk (docs/serve.md lists every series).

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "ferry/dispatch/prefetch.h"
#include "ferry/engine/engine.h"

namespace ferry::serve {

class ServerMetrics {
 public:
  // An answer sent (or a stream begun) with HTTP `status`.
  void count_answer(int status);
  // A generation ended with the OpenAI finish reason `reason` ("stop", "length", ...).
  void count_finished(const std::string& reason);
  // `n` generated tokens were delivered to a client now.
  void count_tokens(std::uint64_t n);
  void stream_opened();
  void stream_closed();

  // Tokens delivered per second over the last kRateWindow seconds (whole seconds only).
  double tokens_per_second() const;
  std::int64_t open_streams() const;

  // The exposition: engine statistics, `prefetch` (null: no disk streaming) and these counters.
  std::string render(const engine::EngineStats& engine, const engine::EngineOptions& options,
                     const std::optional<dispatch::PrefetchStats>& prefetch) const;

  static constexpr int kRateWindow = 10;

 private:
  using Clock = std::chrono::steady_clock;
  std::int64_t second_now() const;

  mutable std::mutex mutex_;
  std::map<int, std::uint64_t> answers_;
  std::map<std::string, std::uint64_t> finished_;
  std::int64_t open_streams_ = 0;
  // Tokens per second of the last kRateWindow + 1 seconds, a ring indexed by second.
  std::array<std::uint64_t, kRateWindow + 1> tokens_{};
  std::array<std::int64_t, kRateWindow + 1> bucket_second_{};
  Clock::time_point start_ = Clock::now();
};

}  // namespace ferry::serve
