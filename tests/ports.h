#pragma once
// Ports for tests of programs that listen: one reserved for a program the test starts (which
// binds it later), or one held in use for the test's life.

#include <arpa/inet.h>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <netinet/in.h>
#include <random>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace ferry::testing {

// A TCP socket bound on 127.0.0.1 at a port the kernel picked; listening when asked.
class BoundPort {
 public:
  explicit BoundPort(bool listen) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof addr;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &length) != 0 ||
        (listen && ::listen(fd_, 16) != 0)) {
      throw std::runtime_error("cannot bind a test port on 127.0.0.1");
    }
    port_ = ntohs(addr.sin_port);
  }
  ~BoundPort() {
    if (fd_ >= 0) ::close(fd_);
  }
  BoundPort(const BoundPort&) = delete;
  BoundPort& operator=(const BoundPort&) = delete;

  std::uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

// A port on 127.0.0.1 for a program a test starts, which binds it a moment (or a second) later.
// A port the kernel picked and released could be handed out again meanwhile, to any socket
// binding port 0 or connecting out (tests run in parallel: Gloo pairs, HTTP clients, other
// launches), so this one is outside the kernel's ephemeral range, free when reserved, and
// claimed for the object's life by an abstract Unix socket named after it, which other tests
// reserving ports skip; the kernel drops the claim if the test dies.
class ReservedPort {
 public:
  ReservedPort() {
    const auto [low, high] = candidates();
    std::random_device seed;
    const unsigned span = high - low + 1;
    const unsigned start = seed() % span;
    for (unsigned i = 0; i < span; ++i) {
      const auto port = static_cast<std::uint16_t>(low + (start + i) % span);
      if (claim(port) && bindable(port)) {
        port_ = port;
        return;
      }
      release();
    }
    throw std::runtime_error("cannot reserve a test port on 127.0.0.1");
  }
  ~ReservedPort() { release(); }
  ReservedPort(const ReservedPort&) = delete;
  ReservedPort& operator=(const ReservedPort&) = delete;

  std::uint16_t port() const { return port_; }

 private:
  // Ports below the ephemeral range (ip_local_port_range), else above it.
  static std::pair<unsigned, unsigned> candidates() {
    unsigned low = 32768, high = 60999;
    std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> low >> high;
    if (low >= 12000) return {10000, low - 1};
    if (high <= 63000) return {high + 1, 65535};
    return {1024, 65535};  // no room outside: the claim still keeps tests apart
  }

  bool claim(std::uint16_t port) {
    claim_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (claim_fd_ < 0) return false;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const std::string name = "ferry-test-port-" + std::to_string(port);
    name.copy(addr.sun_path + 1, sizeof addr.sun_path - 2);  // sun_path[0] = 0: abstract
    const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
    return ::bind(claim_fd_, reinterpret_cast<sockaddr*>(&addr), length) == 0;
  }

  static bool bindable(std::uint16_t port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.sin_port = htons(port);
    const bool ok = fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    if (fd >= 0) ::close(fd);
    return ok;
  }

  void release() {
    if (claim_fd_ >= 0) ::close(claim_fd_);
    claim_fd_ = -1;
  }

  int claim_fd_ = -1;
  std::uint16_t port_ = 0;
};

}  // namespace ferry::testing
