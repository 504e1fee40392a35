#include "ferry/kernels/isa.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <string>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "ferry/core/error.h"

namespace ferry::kernels {
namespace {

constexpr int kNoOverride = -1;
// The ScopedIsa in force, as an int (kNoOverride when none).
std::atomic<int> g_override{kNoOverride};

Isa from_environment() {
  const char* text = std::getenv("FERRY_KERNELS_ISA");
  if (text == nullptr || *text == '\0') return detected_isa();
  try {
    return parse_isa(text);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(fmt::format("environment variable FERRY_KERNELS_ISA: {}", e.what()));
  }
}

}  // namespace

std::string_view isa_name(Isa isa) {
  switch (isa) {
    case Isa::kPortable: return "portable";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx512Vnni: return "avx512vnni";
  }
  return "unknown";
}

Isa parse_isa(std::string_view text) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const Isa isa : {Isa::kPortable, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Vnni}) {
    if (lower == isa_name(isa)) return isa;
  }
  throw InvalidArgument(fmt::format(
      "unknown kernel instruction set '{}': expected portable, avx2, avx512 or avx512vnni", text));
}

std::string missing_features(Isa isa) {
  std::string missing;
  [[maybe_unused]] const auto need = [&missing](bool has, std::string_view name) {
    if (!has) missing += fmt::format("{}{}", missing.empty() ? "" : " ", name);
  };
  if (isa == Isa::kPortable) return missing;
#if defined(__x86_64__)
  __builtin_cpu_init();
  need(__builtin_cpu_supports("avx2"), "avx2");
  need(__builtin_cpu_supports("fma"), "fma");
  // GCC 12's __builtin_cpu_supports answers 0 for "f16c" on CPUs that have it: ask cpuid.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  need(__get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0, "f16c");
  if (isa >= Isa::kAvx512) need(__builtin_cpu_supports("avx512f"), "avx512f");
  if (isa >= Isa::kAvx512Vnni) {
    need(__builtin_cpu_supports("avx512bw"), "avx512bw");
    need(__builtin_cpu_supports("avx512vl"), "avx512vl");
    need(__builtin_cpu_supports("avx512vnni"), "avx512vnni");
  }
#else
  missing = isa == Isa::kAvx2     ? "avx2 fma f16c (not an x86-64 CPU)"
            : isa == Isa::kAvx512 ? "avx512f (not an x86-64 CPU)"
                                  : "avx512f avx512bw avx512vl avx512vnni (not an x86-64 CPU)";
#endif
  return missing;
}

Isa detected_isa() {
  static const Isa detected = [] {
    if (missing_features(Isa::kAvx512Vnni).empty()) return Isa::kAvx512Vnni;
    if (missing_features(Isa::kAvx512).empty()) return Isa::kAvx512;
    if (missing_features(Isa::kAvx2).empty()) return Isa::kAvx2;
    return Isa::kPortable;
  }();
  return detected;
}

Isa active_isa() {
  const int forced = g_override.load(std::memory_order_relaxed);
  if (forced != kNoOverride) return static_cast<Isa>(forced);
  static const Isa from_env = std::min(from_environment(), detected_isa());
  return from_env;
}

ScopedIsa::ScopedIsa(Isa isa) : previous_(g_override.load()) {
  g_override.store(static_cast<int>(std::min(isa, detected_isa())));
}

ScopedIsa::~ScopedIsa() { g_override.store(previous_); }

}  // namespace ferry::kernels
