#include "cli/progress_bar.h"

#include <fmt/format.h>

#include <filesystem>
#include <unistd.h>

#include "ferry/core/bytes.h"

namespace ferry::cli {

bool is_terminal(std::FILE* stream) { return ::isatty(::fileno(stream)) == 1; }

void LoadProgressBar::update(const dispatch::LoadProgress& p) {
  const auto now = std::chrono::steady_clock::now();
  const bool done = p.tensors_done == p.tensors_total;
  if (drawn_ && !done && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  drawn_ = true;

  constexpr int kWidth = 30;
  // By bytes where there are any (shards differ in size, tensors even more), else by tensors.
  const double fraction =
      p.bytes_total > 0 ? static_cast<double>(p.bytes_done) / static_cast<double>(p.bytes_total)
      : p.tensors_total > 0
          ? static_cast<double>(p.tensors_done) / static_cast<double>(p.tensors_total)
          : 1.0;
  const int filled = static_cast<int>(fraction * kWidth);
  std::string line =
      fmt::format("  loading [{}{}] {:3.0f}%  {} / {}  {}/{} tensors  {}", std::string(filled, '#'),
                  std::string(kWidth - filled, '.'), fraction * 100, format_bytes(p.bytes_done),
                  format_bytes(p.bytes_total), p.tensors_done, p.tensors_total,
                  std::filesystem::path(p.current_file).filename().string());
  const std::size_t width = line.size();
  if (width < last_width_) line.append(last_width_ - width, ' ');
  last_width_ = width;
  fmt::print(out_, "\r{}", line);
  std::fflush(out_);
}

void LoadProgressBar::finish() {
  if (!drawn_) return;
  drawn_ = false;
  fmt::print(out_, "\n");
  std::fflush(out_);
}

}  // namespace ferry::cli
