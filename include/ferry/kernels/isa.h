#pragma once
// Which instruction-set variant of the kernels runs. The variant is chosen at run time from what
// the CPU supports, so one binary runs on any x86-64 (and elsewhere, with the portable variant);
// FERRY_KERNELS_ISA or a ScopedIsa can ask for a lower one (tests, comparisons).

#include <string_view>

namespace ferry::kernels {

// Ordered: a higher variant needs everything a lower one does.
enum class Isa {
  kPortable,    // plain C++, auto-vectorised by the compiler for the baseline target
  kAvx2,        // AVX2 + FMA + F16C
  kAvx512,      // AVX-512 F (plus AVX2 + FMA + F16C)
  kAvx512Vnni,  // AVX-512 F + BW + VL + VNNI: int8 by byte dot products; floats as kAvx512
};

// "portable", "avx2", "avx512", "avx512vnni".
std::string_view isa_name(Isa isa);

// Parses isa_name's words (case-insensitive); throws InvalidArgument naming `text` and the words.
Isa parse_isa(std::string_view text);

// The CPU features `isa` needs that this CPU lacks, e.g. "avx512f"; empty when it has them all.
std::string missing_features(Isa isa);

// The highest variant this CPU supports.
Isa detected_isa();

// The variant the kernels use now: a ScopedIsa's if one is alive, else FERRY_KERNELS_ISA's (read
// once, at the first call; an unknown name throws InvalidArgument), else detected_isa(); always
// clamped to detected_isa().
Isa active_isa();

// Makes active_isa() return min(isa, detected_isa()) while alive, then restores what was before.
// Process-wide: meant for tests and benchmarks, not for threads that disagree.
class ScopedIsa {
 public:
  explicit ScopedIsa(Isa isa);
  ~ScopedIsa();
  ScopedIsa(const ScopedIsa&) = delete;
  ScopedIsa& operator=(const ScopedIsa&) = delete;

 private:
  int previous_;
};

}  // namespace ferry::kernels
