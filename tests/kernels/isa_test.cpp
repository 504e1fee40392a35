// Run-time choice of the kernels' instruction set.
#include <gtest/gtest.h>

#include "ferry/core/error.h"
#include "ferry/kernels/isa.h"

namespace ferry::kernels {
namespace {

TEST(KernelsIsa, NamesRoundTripCaseInsensitively) {
  for (const Isa isa : {Isa::kPortable, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Vnni}) {
    EXPECT_EQ(parse_isa(isa_name(isa)), isa);
  }
  EXPECT_EQ(parse_isa("AVX2"), Isa::kAvx2);
}

TEST(KernelsIsa, UnknownNameIsAnInvalidArgumentNamingIt) {
  try {
    parse_isa("sse9");
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("'sse9'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("portable, avx2, avx512 or avx512vnni"), std::string::npos);
  }
}

TEST(KernelsIsa, DetectedIsaHasEveryFeatureItNeeds) {
  EXPECT_EQ(missing_features(detected_isa()), "");
  EXPECT_EQ(missing_features(Isa::kPortable), "");
}

TEST(KernelsIsa, ScopedIsaClampsToTheCpuAndRestores) {
  const Isa before = active_isa();
  {
    const ScopedIsa portable(Isa::kPortable);
    EXPECT_EQ(active_isa(), Isa::kPortable);
    {
      const ScopedIsa widest(Isa::kAvx512Vnni);
      EXPECT_EQ(active_isa(), detected_isa());  // never more than the CPU has
    }
    EXPECT_EQ(active_isa(), Isa::kPortable);
  }
  EXPECT_EQ(active_isa(), before);
}

}  // namespace
}  // namespace ferry::kernels
