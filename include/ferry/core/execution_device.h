#pragma once
// Where a module computes: a GPU by index or the CPU. Disk is where weights rest, never where they
// compute, so this type cannot hold it (Note [Execution devices] in src/core/placement.cpp).

#include <compare>
#include <optional>
#include <string>
#include <string_view>

#include "ferry/core/placement.h"

namespace ferry {

class ExecutionDevice {
 public:
  static constexpr ExecutionDevice gpu(int index) { return ExecutionDevice(Placement::gpu(index)); }
  static constexpr ExecutionDevice cpu() { return ExecutionDevice(Placement::cpu()); }

  // The execution device a placement names; nullopt for disk.
  static constexpr std::optional<ExecutionDevice> of(Placement placement) {
    if (placement.is_disk()) return std::nullopt;
    return ExecutionDevice(placement);
  }
  // As `of`, but disk is an InvalidArgument naming `what` (e.g. "the main device").
  static ExecutionDevice from(Placement placement, std::string_view what);
  // "0", "cuda:0", "gpu:0" or "cpu"; "disk" and anything else throw InvalidArgument.
  static ExecutionDevice parse(std::string_view text);

  constexpr bool is_gpu() const noexcept { return placement_.is_gpu(); }
  constexpr bool is_cpu() const noexcept { return placement_.is_cpu(); }
  // GPU index; 0 for the CPU.
  constexpr int index() const noexcept { return placement_.index(); }
  std::string to_string() const { return placement_.to_string(); }

  // Every execution device is a placement (weights may rest where they compute).
  constexpr Placement placement() const noexcept { return placement_; }
  constexpr operator Placement() const noexcept { return placement_; }  // NOLINT: widening

  constexpr auto operator<=>(const ExecutionDevice&) const = default;

 private:
  constexpr explicit ExecutionDevice(Placement placement) : placement_(placement) {}
  Placement placement_;
};

}  // namespace ferry
