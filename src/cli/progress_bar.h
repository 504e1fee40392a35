#pragma once
// A one-line progress bar (checkpoint loading, make-model), redrawn in place with '\r' on a
// terminal.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "ferry/dispatch/load_checkpoint.h"

namespace ferry::cli {

// True when `stream` is an interactive terminal (where a redrawn bar makes sense).
bool is_terminal(std::FILE* stream);

// Draws progress on `out`. Redraws at most every 100 ms (and at 100% and when the label
// changes), so calling update() after every tensor is cheap. Not thread-safe.
class ProgressBar {
 public:
  explicit ProgressBar(std::FILE* out) : out_(out) {}
  ~ProgressBar() { finish(); }
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // "  <label> [#####.....]  50%  <done> / <total>  <detail>"; `fraction` in [0, 1].
  void draw(std::string_view label, double fraction, std::string_view figures,
            std::string_view detail, bool force);
  // A checkpoint load, by bytes where there are any, else by tensors.
  void update(const dispatch::LoadProgress& p);
  // `done` of `total` bytes under `label` ("generating", "writing").
  void update(std::string_view label, std::uint64_t done_bytes, std::uint64_t total_bytes);
  // Ends the bar's line; the next output starts on a fresh line. Idempotent.
  void finish();

 private:
  std::FILE* out_;
  std::chrono::steady_clock::time_point last_draw_{};
  std::string last_label_;
  std::size_t last_width_ = 0;  // characters of the last line, to blank a shorter redraw
  bool drawn_ = false;
};

using LoadProgressBar = ProgressBar;

}  // namespace ferry::cli
