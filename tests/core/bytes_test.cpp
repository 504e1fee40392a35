#include "ferry/core/bytes.h"

#include <gtest/gtest.h>

#include "ferry/core/error.h"

namespace ferry {
namespace {

std::uint64_t parse(std::string_view s) { return Bytes::parse(s).value(); }

TEST(BytesParse, BinaryUnitsArePowersOfTwo) {
  EXPECT_EQ(parse("10GiB"), 10ULL * (1ULL << 30));
  EXPECT_EQ(parse("3MiB"), 3ULL << 20);
  EXPECT_EQ(parse("5KiB"), 5ULL << 10);
}

TEST(BytesParse, BinaryUnitsAreCaseInsensitiveAndHaveNoBitRule) {
  EXPECT_EQ(parse("1gib"), 1ULL << 30);
  EXPECT_EQ(parse("1GIB"), 1ULL << 30);
  EXPECT_EQ(parse("2mib"), 2ULL << 20);
}

TEST(BytesParse, DecimalUnitsArePowersOfTen) {
  EXPECT_EQ(parse("10GB"), 10'000'000'000ULL);
  EXPECT_EQ(parse("7MB"), 7'000'000ULL);
  EXPECT_EQ(parse("2KB"), 2'000ULL);
}

TEST(BytesParse, LowercaseTrailingBMeansBits) {
  EXPECT_EQ(parse("10Gb"), 10'000'000'000ULL / 8);
  EXPECT_EQ(parse("10gb"), 10'000'000'000ULL / 8);
  EXPECT_EQ(parse("8Mb"), 1'000'000ULL);
  EXPECT_EQ(parse("1kb"), 125ULL);
  EXPECT_EQ(parse("1gB"), 1'000'000'000ULL);  // uppercase B: bytes
  EXPECT_EQ(parse("3Kb"), 375ULL);
  EXPECT_EQ(parse("1Kb"), 125ULL);
}

TEST(BytesParse, BitsRoundDown) { EXPECT_EQ(parse("0.001Kb"), 0ULL); }

TEST(BytesParse, FractionsTruncateLikePythonInt) {
  EXPECT_EQ(parse("1.5GB"), 1'500'000'000ULL);
  EXPECT_EQ(parse("1.1GiB"), 1181116006ULL);  // int(1.1 * 2**30) = int(1181116006.4)
  EXPECT_EQ(parse("0.5KiB"), 512ULL);
  EXPECT_EQ(parse(".5KB"), 500ULL);
  EXPECT_EQ(parse("2.KB"), 2000ULL);
}

TEST(BytesParse, WhitespaceBeforeNumberAndUnitIsAccepted) {
  EXPECT_EQ(parse("10 GB"), 10'000'000'000ULL);
  EXPECT_EQ(parse(" 10GiB"), 10ULL << 30);
  EXPECT_EQ(parse("1\tMiB"), 1ULL << 20);
}

TEST(BytesParse, PlainIntegersAreBytes) {
  EXPECT_EQ(parse("0"), 0ULL);
  EXPECT_EQ(parse("1024"), 1024ULL);
  EXPECT_EQ(parse("18446744073709551615"), 18446744073709551615ULL);
}

TEST(BytesParse, ZeroWithUnitIsAccepted) { EXPECT_EQ(parse("0MB"), 0ULL); }

class BytesParseRejects : public ::testing::TestWithParam<const char*> {};

TEST_P(BytesParseRejects, WithMessageQuotingInput) {
  const std::string input = GetParam();
  try {
    Bytes::parse(input);
    FAIL() << "accepted '" << input << "'";
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(std::string(e.what()),
              "`size` " + input +
                  " is not in a valid format. Use an integer for bytes, or a string with an unit "
                  "(like '5.0GB').");
    EXPECT_EQ(e.actual(), input);
  }
}

INSTANTIATE_TEST_SUITE_P(Malformed, BytesParseRejects,
                         ::testing::Values("", "   ", "GB", "GiB", ".GB", "10TB", "10B", "10 G",
                                           "-5GB", "-1", "1e3MB", "inf GB", "nanGB", "1_000MB",
                                           "10GB ", "abc", "10 GiBs", "1.2.3GB", "+5GB", "0x10MB",
                                           "18446744073709551616", "99999999999999999999GB"));

TEST(BytesFormat, HumanReadableBinaryUnits) {
  EXPECT_EQ(Bytes(0).to_string(), "0 B");
  EXPECT_EQ(Bytes(1023).to_string(), "1023 B");
  EXPECT_EQ(Bytes(1024).to_string(), "1.00 KiB");
  EXPECT_EQ(Bytes(1536).to_string(), "1.50 KiB");
  EXPECT_EQ((10_GiB).to_string(), "10.00 GiB");
  EXPECT_EQ(format_bytes(5ULL << 40), "5.00 TiB");
}

TEST(Bytes, ArithmeticAndOrdering) {
  Bytes a(10);
  a += Bytes(5);
  EXPECT_EQ(a, Bytes(15));
  EXPECT_LT(Bytes(1), Bytes(2));
  EXPECT_EQ(1_MiB + 1_MiB, 2_MiB);
}

}  // namespace
}  // namespace ferry
