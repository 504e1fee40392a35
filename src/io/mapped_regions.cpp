#include "io/mapped_regions.h"

#include <signal.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

namespace ferry::io {
namespace {

// A fixed table, so the handler reads it without locks or allocation. A slot is claimed by
// setting `used`, filled, then published by storing `begin`; it is retired in the reverse order.
struct Region {
  std::atomic<bool> used{false};
  std::atomic<std::uintptr_t> begin{0};  // 0: not published
  std::atomic<std::uint64_t> size_bytes{0};
  std::atomic<const char*> file{nullptr};
};
constexpr std::size_t kRegions = 16384;
std::array<Region, kRegions> g_regions;
struct sigaction g_previous {};

void write_all(const char* text, std::size_t n) noexcept {
  while (n > 0) {
    const ssize_t w = ::write(STDERR_FILENO, text, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    text += w;
    n -= static_cast<std::size_t>(w);
  }
}

void write_text(const char* text) noexcept { write_all(text, std::strlen(text)); }

void write_number(std::uint64_t v) noexcept {
  char digits[24];
  std::size_t n = 0;
  do {
    digits[sizeof digits - 1 - n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  write_all(digits + sizeof digits - n, n);
}

// Async-signal-safe: atomics, write(2), sigaction, raise, _exit only.
void on_sigbus(int sig, siginfo_t* info, void* context) {
  const auto address = reinterpret_cast<std::uintptr_t>(info != nullptr ? info->si_addr : nullptr);
  for (const Region& r : g_regions) {
    const std::uintptr_t begin = r.begin.load(std::memory_order_acquire);
    if (begin == 0 || address < begin || address - begin >= r.size_bytes.load()) continue;
    const char* file = r.file.load();
    write_text("ferry: ");
    write_text(file != nullptr ? file : "a mapped file");
    write_text(" changed or was truncated while mapped (SIGBUS at offset ");
    write_number(address - begin);
    write_text("); a checkpoint must not be modified or replaced while ferry reads it\n");
    ::_exit(kSigbusExitCode);
  }
  // Not ours: as if the handler had never been installed.
  ::sigaction(SIGBUS, &g_previous, nullptr);
  if ((g_previous.sa_flags & SA_SIGINFO) != 0 && g_previous.sa_sigaction != nullptr) {
    g_previous.sa_sigaction(sig, info, context);
    return;
  }
  if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN &&
      g_previous.sa_handler != nullptr) {
    g_previous.sa_handler(sig);
    return;
  }
  // A fault re-executes the instruction, which faults again under the default action; a
  // SIGBUS sent with kill() does not, so it is raised again.
  if (info == nullptr || info->si_code <= 0) ::raise(sig);
}

void install_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction action {};
    action.sa_sigaction = on_sigbus;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_SIGINFO | SA_ONSTACK;
    ::sigaction(SIGBUS, &action, &g_previous);
  });
}

}  // namespace

int register_mapping(const void* data, std::uint64_t size_bytes, const char* file) noexcept {
  install_handler();
  for (std::size_t i = 0; i < kRegions; ++i) {
    Region& r = g_regions[i];
    bool expected = false;
    if (r.used.load(std::memory_order_relaxed) ||
        !r.used.compare_exchange_strong(expected, true)) {
      continue;
    }
    r.size_bytes.store(size_bytes);
    r.file.store(file);
    r.begin.store(reinterpret_cast<std::uintptr_t>(data), std::memory_order_release);
    return static_cast<int>(i);
  }
  return -1;
}

void unregister_mapping(int slot) noexcept {
  if (slot < 0) return;
  Region& r = g_regions[static_cast<std::size_t>(slot)];
  r.begin.store(0, std::memory_order_release);
  r.file.store(nullptr);
  r.used.store(false, std::memory_order_release);
}

}  // namespace ferry::io
