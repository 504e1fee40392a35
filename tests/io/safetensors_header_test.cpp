// One test per way a safetensors header can be wrong, each asserting the error type and that
// the message and fields name the file and the tensor; plus what a valid header keeps.
#include "ferry/io/safetensors_header.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ferry/core/error.h"
#include "ferry/io/safetensors.h"
#include "io_test_util.h"

namespace ferry::io {
namespace {

using testing::as_bytes;
using testing::catch_error;
using ::testing::HasSubstr;
using testing::safetensors_bytes;

constexpr std::string_view kFile = "model-00002-of-00004.safetensors";

std::optional<CorruptFile> corrupt(const std::string& bytes) {
  return catch_error<CorruptFile>([&] { parse_safetensors_header(as_bytes(bytes), kFile); });
}

// Asserts a CorruptFile naming the file, the tensor `tensor` (when not empty) and `detail`.
void expect_corrupt(const std::string& bytes, std::string_view tensor, std::string_view detail) {
  const auto e = corrupt(bytes);
  ASSERT_TRUE(e.has_value()) << "no CorruptFile for: " << bytes.substr(8);
  EXPECT_THAT(e->what(), HasSubstr(std::string(kFile)));
  EXPECT_EQ(e->file(), kFile);
  EXPECT_THAT(e->what(), HasSubstr(std::string(detail)));
  if (!tensor.empty()) {
    EXPECT_THAT(e->what(), HasSubstr(fmt::format("'{}'", tensor)));
    EXPECT_EQ(e->path(), tensor);
  }
  EXPECT_EQ(std::string(e->what()).find('\n'), std::string::npos) << "one-line message";
}

std::string f32(std::string_view name, std::string_view shape, std::uint64_t begin,
                std::uint64_t end) {
  return fmt::format(R"("{}":{{"dtype":"F32","shape":{},"data_offsets":[{},{}]}})", name, shape,
                     begin, end);
}

TEST(SafetensorsHeader, EmptyFile) {
  const auto e = corrupt("");
  ASSERT_TRUE(e);
  EXPECT_THAT(e->what(), HasSubstr("is empty"));
  EXPECT_EQ(e->expected(), "at least 8 bytes");
  EXPECT_EQ(e->actual(), "0 bytes");
}

TEST(SafetensorsHeader, TruncatedLength) {
  expect_corrupt(std::string("\x10\0\0\0\0", 5), "", "too short");
}

TEST(SafetensorsHeader, HeaderLengthPastEnd) {
  std::string bytes = safetensors_bytes("{}");
  bytes[0] = 100;
  const auto e = corrupt(bytes);
  ASSERT_TRUE(e);
  EXPECT_THAT(e->what(), HasSubstr("runs past the end"));
  EXPECT_EQ(e->expected(), "at most 8 bytes");
  EXPECT_EQ(e->actual(), "100 bytes");
}

TEST(SafetensorsHeader, HeaderTooLarge) {
  std::string bytes = safetensors_bytes("{}");
  const std::uint64_t n = kMaxHeaderBytes + 1;
  std::memcpy(bytes.data(), &n, 8);
  expect_corrupt(bytes, "", "too large");
}

TEST(SafetensorsHeader, TooLargeLengthIsNotEchoed) {
  // The first 8 bytes of a text file read as a length: reporting them would leak the text.
  const std::string text = "root:x:0:0:root:/root:/bin/bash\n";
  std::uint64_t as_length = 0;
  std::memcpy(&as_length, text.data(), 8);
  const auto e = corrupt(text);
  ASSERT_TRUE(e);
  EXPECT_THAT(e->what(), HasSubstr("not a safetensors file"));
  for (const std::string& s : {std::string(e->what()), e->expected(), e->actual()}) {
    EXPECT_THAT(s, ::testing::Not(HasSubstr(std::to_string(as_length))));
    EXPECT_THAT(s, ::testing::Not(HasSubstr("root")));
  }
}

TEST(SafetensorsHeader, BytesAfterANulAreRejected) {
  // The JSON reader would stop at the NUL and accept what follows as if it were padding.
  const std::string json = "{}";
  std::string header = json + std::string(1, '\0') + "garbage";
  expect_corrupt(safetensors_bytes(header), "", "NUL");
  const auto e = corrupt(safetensors_bytes(header));
  ASSERT_TRUE(e);
  EXPECT_THAT(e->actual(), HasSubstr("byte 2"));
  // Trailing NUL padding is no better than garbage: only spaces (JSON whitespace) pad.
  expect_corrupt(safetensors_bytes(json + std::string(6, '\0'), "", /*pad=*/false), "", "NUL");
  EXPECT_FALSE(corrupt(safetensors_bytes(json + std::string(6, ' '), "", /*pad=*/false)));
}

TEST(SafetensorsHeader, NotJson) { expect_corrupt(safetensors_bytes("{not json"), "", "JSON"); }

TEST(SafetensorsHeader, TruncatedJson) {
  expect_corrupt(safetensors_bytes("{" + f32("w", "[1]", 0, 4), "abcd", /*pad=*/false), "", "JSON");
}

TEST(SafetensorsHeader, InvalidUtf8) {
  expect_corrupt(safetensors_bytes("{\"w\xff\xfe\":{}}"), "", "UTF-8");
}

TEST(SafetensorsHeader, NotAnObject) { expect_corrupt(safetensors_bytes("[1,2]"), "", "object"); }

TEST(SafetensorsHeader, UnknownDType) {
  expect_corrupt(
      safetensors_bytes(R"({"w":{"dtype":"F31","shape":[1],"data_offsets":[0,4]}})", "abcd"), "w",
      "unknown dtype");
}

TEST(SafetensorsHeader, NewerDTypeIsUnsupported) {
  const std::string bytes =
      safetensors_bytes(R"({"w":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}})", "a");
  const auto e =
      catch_error<Unsupported>([&] { parse_safetensors_header(as_bytes(bytes), kFile); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->path(), "w");
  EXPECT_EQ(e->actual(), "F4");
}

TEST(SafetensorsHeader, ShapeDoesNotMatchByteRange) {
  const auto e =
      corrupt(safetensors_bytes("{" + f32("w", "[2,3]", 0, 20) + "}", std::string(20, 'x')));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->path(), "w");
  EXPECT_THAT(e->what(), HasSubstr("shape does not match"));
  EXPECT_EQ(e->expected(), "24 bytes for F32 [2, 3]");
  EXPECT_EQ(e->actual(), "20 bytes in [0, 20]");
}

TEST(SafetensorsHeader, OverlappingRanges) {
  const std::string bytes = safetensors_bytes(
      "{" + f32("a", "[2]", 0, 8) + "," + f32("b", "[2]", 4, 12) + "}", std::string(12, 'x'));
  expect_corrupt(bytes, "b", "overlap");
  const auto e = corrupt(bytes);
  ASSERT_TRUE(e);
  EXPECT_THAT(e->what(), HasSubstr("'a'"));
}

TEST(SafetensorsHeader, Gap) {
  const std::string bytes = safetensors_bytes(
      "{" + f32("a", "[1]", 0, 4) + "," + f32("b", "[1]", 8, 12) + "}", std::string(12, 'x'));
  expect_corrupt(bytes, "b", "gap");
}

TEST(SafetensorsHeader, GapAtStart) {
  expect_corrupt(safetensors_bytes("{" + f32("a", "[1]", 4, 8) + "}", std::string(8, 'x')), "a",
                 "gap");
}

TEST(SafetensorsHeader, OffsetsOutOfBounds) {
  const auto e = corrupt(safetensors_bytes("{" + f32("w", "[4]", 0, 16) + "}", "12345678"));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->path(), "w");
  EXPECT_THAT(e->what(), HasSubstr("out of bounds"));
  EXPECT_EQ(e->actual(), "[0, 16]");
}

TEST(SafetensorsHeader, ReversedOffsets) {
  expect_corrupt(safetensors_bytes("{" + f32("w", "[0]", 8, 4) + "}", "12345678"), "w", "reversed");
}

TEST(SafetensorsHeader, TrailingBytesAfterLastTensor) {
  expect_corrupt(safetensors_bytes("{" + f32("w", "[1]", 0, 4) + "}", "12345678"), "",
                 "after the last tensor 'w'");
}

TEST(SafetensorsHeader, DuplicateName) {
  expect_corrupt(safetensors_bytes("{" + f32("w", "[1]", 0, 4) + "," + f32("w", "[1]", 4, 8) + "}",
                                   "12345678"),
                 "w", "duplicate name");
}

TEST(SafetensorsHeader, MissingField) {
  expect_corrupt(safetensors_bytes(R"({"w":{"dtype":"F32","shape":[1]}})", "abcd"), "w",
                 "data_offsets");
}

TEST(SafetensorsHeader, NegativeDimension) {
  expect_corrupt(safetensors_bytes("{" + f32("w", "[-1]", 0, 4) + "}", "abcd"), "w", "negative");
}

TEST(SafetensorsHeader, FractionalOffset) {
  expect_corrupt(
      safetensors_bytes(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4.0]}})", "abcd"), "w",
      "data_offsets");
}

TEST(SafetensorsHeader, ShapeOverflow) {
  expect_corrupt(safetensors_bytes("{" + f32("w", "[4294967296,4294967296]", 0, 0) + "}"), "w",
                 "too large");
}

TEST(SafetensorsHeader, MetadataMustMapStrings) {
  expect_corrupt(safetensors_bytes(R"({"__metadata__":{"format":1}})"), "", "__metadata__");
}

TEST(SafetensorsHeader, ControlCharactersAreEscapedInMessages) {
  const auto e = corrupt(
      safetensors_bytes(R"({"a\nb":{"dtype":"X","shape":[1],"data_offsets":[0,4]}})", "abcd"));
  ASSERT_TRUE(e);
  EXPECT_THAT(e->what(), HasSubstr("'a\\x0ab'"));
  EXPECT_EQ(e->path(), "a\nb");
}

TEST(SafetensorsHeader, ValidHeaderKeepsEntriesInDataOrderAndMetadata) {
  const std::string bytes = safetensors_bytes(
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"I64","shape":[],"data_offsets":[4,12],)"
      R"("extra":{"ignored":[1,{"x":null}]}},"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},)"
      R"("e":{"dtype":"F16","shape":[0,3],"data_offsets":[12,12]}})",
      std::string(12, 'x'));
  const SafetensorsHeader h = parse_safetensors_header(as_bytes(bytes), kFile);
  ASSERT_EQ(h.entries.size(), 3u);
  EXPECT_EQ(h.entries[0].info.name, "a");
  EXPECT_EQ(h.entries[0].info.dtype, DType::kBF16);
  EXPECT_EQ(h.entries[1].info.name, "b");
  EXPECT_TRUE(h.entries[1].info.shape.empty());
  EXPECT_EQ(h.entries[2].info.shape, (std::vector<std::int64_t>{0, 3}));
  EXPECT_EQ(h.metadata.at("format"), "pt");
  EXPECT_EQ(h.data_offset_bytes, bytes.size() - 12);
}

TEST(SafetensorsHeader, EmptyHeaderIsValid) {
  const std::string bytes("\x08\0\0\0\0\0\0\0{}      ", 16);
  const SafetensorsHeader h = parse_safetensors_header(as_bytes(bytes), kFile);
  EXPECT_TRUE(h.entries.empty());
  EXPECT_EQ(h.data_offset_bytes, 16u);
}

TEST(SafetensorsFileOpen, EmptyFileNamesThePath) {
  testing::ScratchDir dir;
  testing::write_file(dir / "empty.safetensors", "");
  const auto e =
      catch_error<CorruptFile>([&] { SafetensorsFile::open(dir / "empty.safetensors"); });
  ASSERT_TRUE(e);
  EXPECT_THAT(e->what(), HasSubstr("empty.safetensors"));
}

TEST(SafetensorsFileOpen, MissingFileIsIoError) {
  testing::ScratchDir dir;
  const auto e = catch_error<IoError>([&] { SafetensorsFile::open(dir / "nope.safetensors"); });
  ASSERT_TRUE(e);
  EXPECT_THAT(e->what(), HasSubstr("nope.safetensors"));
}

}  // namespace
}  // namespace ferry::io
