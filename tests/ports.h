#pragma once
// Ports for tests of programs that listen: one nobody listens on now (the kernel's pick), or one
// held in use for the test's life.

#include <arpa/inet.h>
#include <cstdint>
#include <netinet/in.h>
#include <stdexcept>
#include <sys/socket.h>
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

// A port on 127.0.0.1 that nobody listened on a moment ago.
inline std::uint16_t free_port() { return BoundPort(/*listen=*/false).port(); }

}  // namespace ferry::testing
