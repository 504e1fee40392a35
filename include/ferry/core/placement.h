#pragma once
// Where weights rest: a GPU by index, CPU RAM, or disk. Printed and parsed as the values of an
// Accelerate device map: 0, 1, ... for GPUs, "cpu", "disk".

#include <compare>
#include <string>
#include <string_view>

namespace ferry {

class Placement {
 public:
  enum class Kind : unsigned char { kGpu, kCpu, kDisk };

  static constexpr Placement gpu(int index) { return Placement(Kind::kGpu, index); }
  static constexpr Placement cpu() { return Placement(Kind::kCpu, 0); }
  static constexpr Placement disk() { return Placement(Kind::kDisk, 0); }

  // Parses a device-map value: "0" (or "cuda:0", "gpu:0") for a GPU, "cpu", "disk".
  // Throws InvalidArgument quoting the text otherwise (negative indices included).
  static Placement parse(std::string_view text);

  constexpr Kind kind() const noexcept { return kind_; }
  constexpr bool is_gpu() const noexcept { return kind_ == Kind::kGpu; }
  constexpr bool is_cpu() const noexcept { return kind_ == Kind::kCpu; }
  constexpr bool is_disk() const noexcept { return kind_ == Kind::kDisk; }
  // GPU index; 0 for cpu and disk.
  constexpr int index() const noexcept { return index_; }

  // "0", "cpu", "disk" — the device-map spelling (a GPU is a JSON integer there).
  std::string to_string() const;

  // Ordering of max_memory keys: GPUs by index, then cpu, then disk.
  constexpr auto operator<=>(const Placement&) const = default;

 private:
  constexpr Placement(Kind kind, int index) : kind_(kind), index_(index) {}
  Kind kind_;
  int index_;
};

}  // namespace ferry
