#pragma once
// A one-line progress bar for checkpoint loading, redrawn in place with '\r' on a terminal.

#include <chrono>
#include <cstdio>
#include <string>

#include "ferry/dispatch/load_checkpoint.h"

namespace ferry::cli {

// True when `stream` is an interactive terminal (where a redrawn bar makes sense).
bool is_terminal(std::FILE* stream);

// Draws load progress on `out`. Redraws at most every 100 ms (and at 100%), so calling update()
// after every tensor is cheap. Not thread-safe.
class LoadProgressBar {
 public:
  explicit LoadProgressBar(std::FILE* out) : out_(out) {}
  ~LoadProgressBar() { finish(); }
  LoadProgressBar(const LoadProgressBar&) = delete;
  LoadProgressBar& operator=(const LoadProgressBar&) = delete;

  void update(const dispatch::LoadProgress& p);
  // Ends the bar's line; the next output starts on a fresh line. Idempotent.
  void finish();

 private:
  std::FILE* out_;
  std::chrono::steady_clock::time_point last_draw_{};
  std::size_t last_width_ = 0;  // characters of the last line, to blank a shorter redraw
  bool drawn_ = false;
};

}  // namespace ferry::cli
