#include "cli/progress_bar.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <unistd.h>

#include "ferry/core/bytes.h"

namespace ferry::cli {

bool is_terminal(std::FILE* stream) { return ::isatty(::fileno(stream)) == 1; }

void ProgressBar::draw(std::string_view label, double fraction, std::string_view figures,
                       std::string_view detail, bool force) {
  const auto now = std::chrono::steady_clock::now();
  const bool relabel = label != last_label_;
  if (drawn_ && !force && !relabel && now - last_draw_ < std::chrono::milliseconds(100)) return;
  if (drawn_ && relabel) {
    fmt::print(out_, "\n");  // the finished phase keeps its line
    last_width_ = 0;
  }
  last_draw_ = now;
  last_label_ = std::string(label);
  drawn_ = true;

  constexpr int kWidth = 30;
  const int filled = static_cast<int>(std::clamp(fraction, 0.0, 1.0) * kWidth);
  std::string line = fmt::format("  {} [{}{}] {:3.0f}%  {}  {}", label, std::string(filled, '#'),
                                 std::string(kWidth - filled, '.'), fraction * 100, figures,
                                 detail);
  const std::size_t width = line.size();
  if (width < last_width_) line.append(last_width_ - width, ' ');
  last_width_ = width;
  fmt::print(out_, "\r{}", line);
  std::fflush(out_);
}

void ProgressBar::update(const dispatch::LoadProgress& p) {
  const bool done = p.tensors_done == p.tensors_total;
  // By bytes where there are any (shards differ in size, tensors even more), else by tensors.
  const double fraction =
      p.bytes_total > 0 ? static_cast<double>(p.bytes_done) / static_cast<double>(p.bytes_total)
      : p.tensors_total > 0
          ? static_cast<double>(p.tensors_done) / static_cast<double>(p.tensors_total)
          : 1.0;
  draw("loading", fraction,
       fmt::format("{} / {}  {}/{} tensors", format_bytes(p.bytes_done),
                   format_bytes(p.bytes_total), p.tensors_done, p.tensors_total),
       std::filesystem::path(p.current_file).filename().string(), done);
}

void ProgressBar::update(std::string_view label, std::uint64_t done_bytes,
                         std::uint64_t total_bytes) {
  const double fraction = total_bytes > 0 ? static_cast<double>(done_bytes) /
                                                static_cast<double>(total_bytes)
                                          : 1.0;
  draw(label, fraction,
       fmt::format("{} / {}", format_bytes(done_bytes), format_bytes(total_bytes)), "",
       done_bytes == total_bytes);
}

void ProgressBar::finish() {
  if (!drawn_) return;
  drawn_ = false;
  fmt::print(out_, "\n");
  std::fflush(out_);
}

}  // namespace ferry::cli
