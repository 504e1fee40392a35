// safetensors write-read round trips (every dtype, 0-dim and empty tensors, bit-exact), the
// zero-copy view and its lifetime, conversions, the reference byte layout, atomic writes.
#include "ferry/io/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>

#include "ferry/core/error.h"
#include "ferry/core/log.h"
#include "ferry/io/safetensors_writer.h"
#include "io_test_util.h"

namespace ferry::io {
namespace {

using testing::catch_error;
using ::testing::HasSubstr;
using testing::ScratchDir;

std::vector<std::byte> random_bytes(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::byte> out(n);
  for (auto& b : out) b = static_cast<std::byte>(rng() & 0xff);
  return out;
}

bool same_bytes(const at::Tensor& a, std::span<const std::byte> b) {
  const at::Tensor c = a.contiguous();
  return static_cast<std::size_t>(c.nbytes()) == b.size() &&
         (b.empty() || std::memcmp(c.data_ptr(), b.data(), b.size()) == 0);
}

const std::vector<std::vector<std::int64_t>> kShapes{{2, 3}, {}, {0, 3}, {5}};

TEST(SafetensorsRoundTrip, RawBytesOfEveryDTypeAndShape) {
  ScratchDir dir;
  std::vector<std::vector<std::byte>> storage;
  std::vector<RawTensor> raw;
  for (DType d : all_dtypes()) {
    for (std::size_t i = 0; i < kShapes.size(); ++i) {
      TensorInfo info{
          .name = fmt::format("{}.{}", safetensors_name(d), i), .dtype = d, .shape = kShapes[i]};
      storage.push_back(
          random_bytes(info.size_bytes(), static_cast<std::uint32_t>(storage.size())));
      raw.push_back(RawTensor{info, storage.back()});
    }
  }
  save_safetensors(dir / "all.safetensors", raw);
  const auto file = SafetensorsFile::open(dir / "all.safetensors");
  ASSERT_EQ(file->names().size(), raw.size());
  for (const RawTensor& t : raw) {
    const auto info = file->info(t.info.name);
    EXPECT_EQ(info.dtype, t.info.dtype) << t.info.name;
    EXPECT_EQ(info.shape, t.info.shape) << t.info.name;
    const auto bytes = file->bytes(t.info.name);
    ASSERT_EQ(bytes.size(), t.bytes.size());
    EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), t.bytes.begin())) << t.info.name;
  }
  EXPECT_EQ(file->metadata().at("format"), "pt");
}

TEST(SafetensorsRoundTrip, TensorsOfEveryLibTorchDTypeLoadBitExact) {
  ScratchDir dir;
  std::map<std::string, at::Tensor> tensors;
  for (DType d : all_dtypes()) {
    const auto type = to_scalar_type(d);
    if (!type) continue;
    for (std::size_t i = 0; i < kShapes.size(); ++i) {
      const auto& shape = kShapes[i];
      TensorInfo info{.name = "", .dtype = d, .shape = shape};
      auto bytes = random_bytes(info.size_bytes(), static_cast<std::uint32_t>(tensors.size()));
      at::Tensor t = at::empty(shape, at::TensorOptions().dtype(*type));
      if (d == DType::kBool) {
        t = at::randint(0, 2, shape).to(at::kBool);
      } else if (!bytes.empty()) {
        std::memcpy(t.data_ptr(), bytes.data(), bytes.size());  // NaN payloads included
      }
      tensors.emplace(fmt::format("{}.{}", torch_name(d), i), t);
    }
  }
  save_safetensors(dir / "t.safetensors", tensors);
  const auto file = SafetensorsFile::open(dir / "t.safetensors");
  for (const auto& [name, expected] : tensors) {
    const at::Tensor loaded = file->load(name);
    EXPECT_EQ(loaded.scalar_type(), expected.scalar_type()) << name;
    EXPECT_EQ(loaded.sizes(), expected.sizes()) << name;
    EXPECT_TRUE(same_bytes(
        loaded, std::as_bytes(std::span<const char>(static_cast<const char*>(expected.data_ptr()),
                                                    static_cast<std::size_t>(expected.nbytes())))))
        << name;
  }
}

TEST(SafetensorsRoundTrip, NonContiguousTensorsAreWrittenInRowMajorOrder) {
  ScratchDir dir;
  const at::Tensor t = at::arange(12, at::kFloat).reshape({3, 4}).t();
  save_safetensors(dir / "t.safetensors", {{"w", t}});
  EXPECT_TRUE(at::equal(SafetensorsFile::open(dir / "t.safetensors")->load("w"), t));
}

TEST(SafetensorsRead, DTypeWithoutScalarTypeIsUnsupportedButReadable) {
  ScratchDir dir;
  const std::vector<std::byte> bytes = random_bytes(8, 1);
  const RawTensor raw{TensorInfo{.name = "u", .dtype = DType::kU32, .shape = {2}}, bytes};
  save_safetensors(dir / "u.safetensors", std::span<const RawTensor>(&raw, 1));
  const auto file = SafetensorsFile::open(dir / "u.safetensors");
  EXPECT_EQ(file->bytes("u").size(), 8u);
  const auto e = catch_error<Unsupported>([&] { file->load("u"); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->path(), "u");
  EXPECT_THAT(e->what(), HasSubstr("u.safetensors"));
  EXPECT_THAT(e->what(), HasSubstr("U32"));
}

TEST(SafetensorsRead, CpuLoadIsAViewThatKeepsTheMappingAlive) {
  ScratchDir dir;
  const at::Tensor w = at::randn({64, 32});
  save_safetensors(dir / "m.safetensors", {{"w", w}});
  auto file = SafetensorsFile::open(dir / "m.safetensors");
  at::Tensor view = file->load("w");
  EXPECT_EQ(view.data_ptr(), static_cast<const void*>(file->bytes("w").data()));
  file.reset();  // the view alone keeps the mapping
  EXPECT_TRUE(at::equal(view, w));
}

TEST(SafetensorsRead, WritingToAViewNeverChangesTheFile) {
  ScratchDir dir;
  save_safetensors(dir / "m.safetensors", {{"w", at::ones({4})}});
  SafetensorsFile::open(dir / "m.safetensors")->load("w").fill_(7.0);
  EXPECT_TRUE(at::equal(SafetensorsFile::open(dir / "m.safetensors")->load("w"), at::ones({4})));
}

TEST(SafetensorsRead, UnalignedDataIsCopiedOnce) {
  ScratchDir dir;
  // Header not padded: 59 bytes of JSON put the data at offset 67, not a multiple of 4.
  const std::string header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const float values[2] = {1.5f, -2.0f};
  std::string data(reinterpret_cast<const char*>(values), 8);
  testing::write_file(dir / "u.safetensors",
                      testing::safetensors_bytes(header + std::string(59 - header.size(), ' '),
                                                 data, /*pad=*/false));
  const auto file = SafetensorsFile::open(dir / "u.safetensors");
  ASSERT_EQ(file->data_offset_bytes() % 4, 3u);
  const at::Tensor t = file->load("w");
  EXPECT_NE(t.data_ptr(), static_cast<const void*>(file->bytes("w").data()));
  EXPECT_FLOAT_EQ(t[0].item<float>(), 1.5f);
  EXPECT_FLOAT_EQ(t[1].item<float>(), -2.0f);
}

TEST(SafetensorsRead, ConversionIsOneExplicitCall) {
  ScratchDir dir;
  const at::Tensor w = at::arange(6, at::kFloat).reshape({2, 3});
  save_safetensors(dir / "m.safetensors", {{"w", w}});
  const auto file = SafetensorsFile::open(dir / "m.safetensors");
  const at::Tensor half = file->load("w", {.dtype = DType::kF16});
  EXPECT_EQ(half.scalar_type(), at::kHalf);
  EXPECT_TRUE(at::equal(half, w.to(at::kHalf)));
  const at::Tensor copy = file->load("w", {.copy = true});
  EXPECT_NE(copy.data_ptr(), static_cast<const void*>(file->bytes("w").data()));
  EXPECT_TRUE(at::equal(copy, w));
  file->prefetch("w");
}

TEST(SafetensorsRead, MissingTensorNamesTensorAndFile) {
  ScratchDir dir;
  save_safetensors(dir / "m.safetensors", {{"w", at::ones({1})}});
  const auto e = catch_error<MissingTensor>(
      [&] { SafetensorsFile::open(dir / "m.safetensors")->load("model.w"); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->path(), "model.w");
  EXPECT_THAT(e->what(), HasSubstr("m.safetensors"));
}

TEST(SafetensorsWrite, ReferenceByteLayout) {
  ScratchDir dir;
  save_safetensors(dir / "a.safetensors",
                   {{"attn.0", at::arange(6, at::kFloat).reshape({1, 2, 3})}}, {.metadata = {}});
  const std::string bytes = testing::read_file(dir / "a.safetensors");
  std::string header = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
  header.append(64 - header.size(), ' ');
  ASSERT_EQ(bytes.size(), 8u + 64u + 24u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x40\0\0\0\0\0\0\0", 8));
  EXPECT_EQ(bytes.substr(8, 64), header);

  save_safetensors(dir / "e.safetensors", std::map<std::string, at::Tensor>{}, {.metadata = {}});
  EXPECT_EQ(testing::read_file(dir / "e.safetensors"),
            std::string("\x08\0\0\0\0\0\0\0{}      ", 16));
}

TEST(SafetensorsWrite, ReferenceOrderAndDefaultMetadata) {
  ScratchDir dir;
  save_safetensors(dir / "o.safetensors",
                   {{"a", at::ones({2}, at::kHalf)}, {"c", at::ones({2})}, {"b", at::ones({2})}});
  const std::string bytes = testing::read_file(dir / "o.safetensors");
  EXPECT_EQ(bytes.substr(8, 32), R"({"__metadata__":{"format":"pt"},)");
  const auto file = SafetensorsFile::open(dir / "o.safetensors");
  EXPECT_EQ(file->data_offset_bytes() % 8, 0u);
  ASSERT_EQ(file->entries().size(), 3u);  // data order: F32 first (alignment), then by name
  EXPECT_EQ(file->entries()[0].info.name, "b");
  EXPECT_EQ(file->entries()[1].info.name, "c");
  EXPECT_EQ(file->entries()[2].info.name, "a");
}

TEST(SafetensorsWrite, FailureMidWriteLeavesNoFile) {
  ScratchDir dir;
  save_safetensors(dir / "m.safetensors", {{"old", at::ones({1})}});
  // A meta tensor has no bytes: copying it fails after the header was written.
  EXPECT_ANY_THROW(save_safetensors(dir / "m.safetensors",
                                    {{"a", at::ones({1})}, {"b", at::empty({4}, at::kMeta)}}));
  EXPECT_TRUE(SafetensorsFile::open(dir / "m.safetensors")->contains("old"));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1);
}

TEST(SafetensorsWrite, RawByteCountMustMatch) {
  ScratchDir dir;
  const std::vector<std::byte> bytes(3);
  const RawTensor raw{TensorInfo{.name = "w", .dtype = DType::kF32, .shape = {1}}, bytes};
  const auto e = catch_error<InvalidArgument>(
      [&] { save_safetensors(dir / "w.safetensors", std::span<const RawTensor>(&raw, 1)); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->path(), "w");
  EXPECT_EQ(e->expected(), "4");
  EXPECT_FALSE(std::filesystem::exists(dir / "w.safetensors"));
}

TEST(SafetensorsMetadata, FormatCheckFollowsAccelerate) {
  ScratchDir dir;
  save_safetensors(dir / "none.safetensors", {{"w", at::ones({1})}}, {.metadata = {}});
  save_safetensors(dir / "tf.safetensors", {{"w", at::ones({1})}},
                   {.metadata = {{"format", "tf"}}});
  save_safetensors(dir / "odd.safetensors", {{"w", at::ones({1})}}, {.metadata = {{"x", "y"}}});
  {
    LogCapture capture;
    check_pt_format(*SafetensorsFile::open(dir / "none.safetensors"));
    EXPECT_TRUE(capture.contains(LogLevel::kWarning, "does not contain metadata"));
  }
  EXPECT_THROW(check_pt_format(*SafetensorsFile::open(dir / "tf.safetensors")), InvalidArgument);
  EXPECT_THROW(check_pt_format(*SafetensorsFile::open(dir / "odd.safetensors")), CorruptFile);
}

}  // namespace
}  // namespace ferry::io
