#pragma once
// The ranks of a distributed run (issue 16): how a rank learns its place from the launcher's
// environment (torchrun's variables), the rendezvous over LibTorch's c10d (a TCPStore on rank 0,
// a Gloo process group), checks that every rank agrees, and the point-to-point messages pipeline
// stages exchange. Every wait has a timeout; a rank that dies or never arrives is named in the
// error the others get (Note [Ranks and failures]).

#include <ATen/ATen.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "ferry/core/error.h"

namespace ferry::engine {

// A failure of the distributed run itself: a rank that never arrived or died, a peer that timed
// out, ranks that disagree (checkpoint, config, plan, ferry version), a port in use, an
// unreachable master. The message names the rank(s) and the values concerned.
class DistributedError : public Error {
 public:
  using Error::Error;
};

// The most ranks a world may have.
inline constexpr int kMaxWorldSize = 1 << 16;

// What a launcher tells a rank (torchrun's variables).
struct WorldInfo {
  std::string master_addr;        // MASTER_ADDR
  std::uint16_t master_port = 0;  // MASTER_PORT (1..65535; 0 only with port_pipe)
  int world_size = 1;             // WORLD_SIZE (1..kMaxWorldSize)
  int rank = 0;                   // RANK (0..world_size-1)
  int local_rank = 0;             // LOCAL_RANK (defaults to RANK)
  // FERRY_PORT_PIPE, set by `ferry launch` when it chose no port: a pipe through which rank 0
  // tells the port its store bound (master_port 0: any free one) and the other ranks learn it
  // (Note [A port nobody else can take] in world.cpp). -1: none.
  int port_pipe = -1;
};

// Reads MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK and LOCAL_RANK. nullopt when WORLD_SIZE is
// unset (not a distributed run). InvalidArgument naming the variable and its value when one is
// malformed or missing (e.g. WORLD_SIZE set but RANK unset, RANK ≥ WORLD_SIZE, a port of 0
// without FERRY_PORT_PIPE, a FERRY_PORT_PIPE that is not an open descriptor).
std::optional<WorldInfo> world_from_environment();

struct WorldOptions {
  // Every wait: rendezvous, agree, send, recv, barrier.
  std::chrono::milliseconds timeout{60'000};
};

// The options a launcher asks for: FERRY_DIST_TIMEOUT (seconds, > 0; what `ferry launch
// --timeout` sets) as the timeout, else the defaults. InvalidArgument naming the variable and its
// value when it is malformed. A command's own --timeout flag overrides it.
WorldOptions world_options_from_environment();

// One rank's membership of the world. Not thread-safe: one thread talks through it at a time.
class World {
 public:
  // Rendezvous: rank 0 binds a c10d::TCPStore on info.master_addr:master_port (a port in use is
  // a DistributedError naming it; port 0 with a port_pipe: a free port, written to the pipe);
  // the other ranks connect to it (port 0: the port read from the pipe; an unreachable master, or
  // no port within the timeout, fails naming the address). Then a ProcessGroupGloo over the store;
  // ranks that do not arrive within the timeout are named in the error.
  static std::unique_ptr<World> join(const WorldInfo& info, const WorldOptions& options = {});
  // Leaving. Rank 0 holds the rendezvous store: its World waits (at most 5 s) for the other
  // ranks' Worlds to be destroyed first. A world that failed leaves at once.
  virtual ~World() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Every rank publishes `value` under `what` ("checkpoint fingerprint", "plan", "ferry
  // version"); returns when all ranks published the same value, else throws DistributedError on
  // every rank naming `what`, the ranks whose value differs from rank 0's, and both values (long
  // values shortened).
  virtual void agree(std::string_view what, const std::string& value) = 0;

  // Point to point. `tensor` is a CPU tensor; send reads it (any layout), recv fills a tensor of
  // the agreed shape and dtype. A peer that died or does not answer within the timeout: a
  // DistributedError naming the peer rank.
  virtual void send(const at::Tensor& tensor, int dst) = 0;
  virtual void recv(at::Tensor& tensor, int src) = 0;
  // A message of any length (its length travels first).
  virtual void send_bytes(std::string_view bytes, int dst) = 0;
  virtual std::string recv_bytes(int src) = 0;
  // The same with its own timeout: a rank that waits for work for as long as its peer is alive
  // (a pipeline stage between requests) passes a long one; a peer that dies still ends the wait.
  virtual std::string recv_bytes(int src, std::chrono::milliseconds timeout) = 0;

  virtual void barrier() = 0;

  // Asynchronous point to point, for schedules that overlap (pipeline micro-batches): the
  // transfer may still be in flight until wait(), which has the World's timeout and throws what
  // send/recv throw. `tensor` must stay alive and untouched until then. Messages of one tag
  // between two ranks arrive in order; a distinct tag per micro-batch keeps them apart.
  class Pending {
   public:
    virtual ~Pending() = default;
    virtual void wait() = 0;
  };
  virtual std::unique_ptr<Pending> isend(const at::Tensor& tensor, int dst, int tag) = 0;
  virtual std::unique_ptr<Pending> irecv(at::Tensor& tensor, int src, int tag) = 0;
};

}  // namespace ferry::engine
