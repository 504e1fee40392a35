// The offload folder: exactly Accelerate's layout (index.json text, raw .dat bytes, bfloat16 and
// scalars), round trips, index merging, entries that point into safetensors files, bad input.
#include "ferry/io/offload_folder.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ferry/core/error.h"
#include "ferry/io/checkpoint.h"
#include "ferry/io/safetensors_writer.h"
#include "io_test_util.h"

namespace ferry::io {
namespace {

using testing::catch_error;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::ScratchDir;

TEST(OffloadWrite, AccelerateLayout) {
  ScratchDir dir;
  offload_state_dict(dir.path(),
                     {{"batchnorm.weight", at::ones({4})},
                      {"batchnorm.num_batches_tracked", at::scalar_tensor(3, at::kLong)}});
  EXPECT_EQ(testing::read_file(dir / "index.json"),
            "{\n"
            "  \"batchnorm.weight\": {\n"
            "    \"dtype\": \"float32\",\n"
            "    \"shape\": [\n"
            "      4\n"
            "    ]\n"
            "  },\n"
            "  \"batchnorm.num_batches_tracked\": {\n"
            "    \"dtype\": \"int64\",\n"
            "    \"shape\": []\n"
            "  }\n"
            "}");
  EXPECT_EQ(testing::read_file(dir / "batchnorm.num_batches_tracked.dat"),
            std::string("\x03\0\0\0\0\0\0\0", 8));
  EXPECT_EQ(std::filesystem::file_size(dir / "batchnorm.weight.dat"), 16u);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 3);
}

TEST(OffloadWrite, BFloat16IsRaw16BitWords) {
  ScratchDir dir;
  OffloadIndex index;
  offload_weight(at::arange(6, at::kBFloat16).reshape({2, 3}), "w", dir.path(), index);
  save_offload_index(index, dir.path());
  EXPECT_EQ(testing::read_file(dir / "w.dat"),
            std::string("\x00\x00\x80\x3f\x00\x40\x40\x40\x80\x40\xa0\x40", 12));
  EXPECT_THAT(testing::read_file(dir / "index.json"), HasSubstr("\"dtype\": \"bfloat16\""));
}

TEST(OffloadRoundTrip, EveryLibTorchDTypeScalarsAndEmptyTensors) {
  ScratchDir dir;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (DType d : all_dtypes()) {
    const auto type = to_scalar_type(d);
    if (!type) continue;
    const std::string name(torch_name(d));
    tensors.emplace_back(name + ".matrix", (at::arange(6) % 2).to(*type).reshape({2, 3}));
    tensors.emplace_back(name + ".scalar", at::scalar_tensor(1, at::TensorOptions(*type)));
    tensors.emplace_back(name + ".empty", at::empty({0, 4}, at::TensorOptions(*type)));
  }
  offload_state_dict(dir.path(), tensors);
  const auto folder = OffloadFolder::open(dir.path());
  ASSERT_EQ(folder->names().size(), tensors.size());
  for (const auto& [name, expected] : tensors) {
    const at::Tensor loaded = folder->load(name);
    EXPECT_EQ(loaded.scalar_type(), expected.scalar_type()) << name;
    EXPECT_EQ(loaded.sizes(), expected.sizes()) << name;
    EXPECT_TRUE(at::equal(loaded, expected)) << name;
    EXPECT_EQ(folder->info(name).size_bytes(), static_cast<std::uint64_t>(expected.nbytes()));
  }
  EXPECT_EQ(resolve_checkpoint(dir.path()).kind, CheckpointKind::kOffloadFolder);
  EXPECT_EQ(open_checkpoint(dir / "index.json")->names(), folder->names());
}

TEST(OffloadIndexMerge, ExistingEntriesKeepTheirPlace) {
  ScratchDir dir;
  offload_state_dict(dir.path(), {{"a", at::ones({1})}, {"b", at::ones({1})}});
  offload_state_dict(dir.path(), {{"c", at::ones({2})}, {"a", at::ones({3})}});
  const OffloadIndex index = load_offload_index(dir.path());
  ASSERT_EQ(index.size(), 3u);
  EXPECT_EQ(index[0].name, "a");
  EXPECT_THAT(index[0].shape, ElementsAre(3));
  EXPECT_EQ(index[1].name, "b");
  EXPECT_EQ(index[2].name, "c");
}

TEST(OffloadSafetensorsEntries, ReadInPlaceWithDTypeConversion) {
  ScratchDir dir;
  const at::Tensor w = at::arange(6, at::kFloat).reshape({2, 3});
  save_safetensors(dir / "model.safetensors", {{"model.w", w}});
  std::filesystem::create_directories(dir / "offload");
  // Entries ferry builds itself may point anywhere (from_index); written to index.json and
  // read back, the same entries are refused (OffloadConfinement below).
  const OffloadIndex index{{.name = "w",
                            .dtype = DType::kF16,
                            .safetensors_file = dir / "model.safetensors",
                            .weight_name = "model.w"},
                           {.name = "raw",
                            .safetensors_file = "../model.safetensors",
                            .weight_name = "model.w"}};
  save_offload_index(index, dir / "offload");
  const auto folder = OffloadFolder::from_index(dir / "offload", index);
  const at::Tensor half = folder->load("w");
  EXPECT_EQ(half.scalar_type(), at::kHalf);
  EXPECT_TRUE(at::equal(half, w.to(at::kHalf)));
  EXPECT_EQ(folder->info("w").dtype, DType::kF16);
  EXPECT_EQ(folder->info("w").shape, (std::vector<std::int64_t>{2, 3}));
  EXPECT_TRUE(at::equal(folder->load("raw"), w));
  EXPECT_EQ(folder->file_of("w"), dir / "model.safetensors");
  // Saving the index again keeps such entries as they are.
  save_offload_index({}, dir / "offload");
  EXPECT_TRUE(load_offload_index(dir / "offload")[0].in_safetensors());
}

TEST(OffloadBadInput, DatFileOfTheWrongSize) {
  ScratchDir dir;
  offload_state_dict(dir.path(), {{"w", at::ones({4})}});
  testing::write_file(dir / "w.dat", "123456");
  const auto e = catch_error<CorruptFile>([&] { OffloadFolder::open(dir.path())->load("w"); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->path(), "w");
  EXPECT_THAT(e->what(), HasSubstr("w.dat"));
  EXPECT_EQ(e->expected(), "16");
  EXPECT_EQ(e->actual(), "6");
}

TEST(OffloadBadInput, MissingDatFile) {
  ScratchDir dir;
  offload_state_dict(dir.path(), {{"w", at::ones({4})}});
  std::filesystem::remove(dir / "w.dat");
  const auto e = catch_error<IoError>([&] { OffloadFolder::open(dir.path())->load("w"); });
  ASSERT_TRUE(e);
  EXPECT_THAT(e->what(), HasSubstr("w.dat"));
}

void expect_bad_index(std::string_view json, std::string_view tensor, std::string_view detail) {
  const auto e = catch_error<CorruptFile>([&] { parse_offload_index(json, "off/index.json"); });
  ASSERT_TRUE(e) << json;
  EXPECT_EQ(e->file(), "off/index.json");
  EXPECT_THAT(e->what(), HasSubstr("off/index.json"));
  EXPECT_THAT(e->what(), HasSubstr(std::string(detail)));
  if (!tensor.empty()) {
    EXPECT_EQ(e->path(), tensor);
  }
}

TEST(OffloadBadInput, IndexErrorsNameFileAndTensor) {
  expect_bad_index("{\"w\": ", "", "JSON");
  expect_bad_index("[]", "", "not a JSON object");
  expect_bad_index(R"({"w": {"shape": [1]}})", "w", "dtype");
  expect_bad_index(R"({"w": {"dtype": "float33", "shape": [1]}})", "w", "unknown dtype");
  expect_bad_index(R"({"w": {"dtype": "float32", "shape": [-1]}})", "w", "shape");
  expect_bad_index(R"({"w": {"dtype": "float32", "shape": 4}})", "w", "shape");
  expect_bad_index(R"({"../etc/w": {"dtype": "float32", "shape": [1]}})", "../etc/w",
                   "plain file name");
  expect_bad_index(R"({"w": {"dtype": "float32", "shape": [1]}, "w": {}})", "w", "twice");
  expect_bad_index(R"({"w": {"safetensors_file": 3}})", "w", "safetensors_file");
}

TEST(OffloadBadInput, SafetensorsEntryPointingNowhere) {
  ScratchDir dir;
  save_safetensors(dir / "m.safetensors", {{"x", at::ones({1})}});
  testing::write_file(dir / "index.json",
                      R"({"w": {"safetensors_file": "m.safetensors", "weight_name": "y"}})");
  const auto e = catch_error<CorruptFile>([&] { OffloadFolder::open(dir.path())->load("w"); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->path(), "w");
  EXPECT_THAT(e->what(), HasSubstr("m.safetensors"));
  EXPECT_THAT(e->what(), HasSubstr("'y'"));
}

TEST(OffloadBadInput, NameWithSlashIsNotWritten) {
  ScratchDir dir;
  OffloadIndex index;
  EXPECT_THROW(offload_weight(at::ones({1}), "a/b", dir.path(), index), InvalidArgument);
  EXPECT_TRUE(index.empty());
}

// Note [Offload index paths]: an index.json read from disk names files inside its folder only.
class OffloadConfinement : public ::testing::Test {
 protected:
  void SetUp() override {
    save_safetensors(dir_ / "model.safetensors", {{"model.w", at::arange(4, at::kFloat)}});
    std::filesystem::create_directories(offload());
  }
  std::filesystem::path offload() const { return dir_ / "offload"; }
  void write_index(const std::string& safetensors_file) const {
    testing::write_file(offload() / "index.json",
                        fmt::format(R"({{"w": {{"safetensors_file": "{}", "weight_name": "model.w"}}}})",
                                    safetensors_file));
  }
  // The CorruptFile open() or load("w") raises: names the entry and index.json, and never
  // what the target holds.
  void expect_refused(std::string_view detail) const {
    const auto e = catch_error<CorruptFile>([&] { OffloadFolder::open(offload())->load("w"); });
    ASSERT_TRUE(e) << "the index was followed out of its folder";
    EXPECT_EQ(e->path(), "w");
    EXPECT_EQ(e->file(), (offload() / "index.json").string());
    EXPECT_THAT(e->what(), HasSubstr(std::string(detail)));
  }
  ScratchDir dir_;
};

TEST_F(OffloadConfinement, AbsolutePathIsRefused) {
  write_index((dir_ / "model.safetensors").string());
  expect_refused("relative path");
  write_index("/etc/passwd");
  expect_refused("relative path");
}

TEST_F(OffloadConfinement, DotDotIsRefused) {
  write_index("../model.safetensors");
  expect_refused("relative path");
  write_index("sub/../../model.safetensors");
  expect_refused("relative path");
}

TEST_F(OffloadConfinement, SymlinkOutOfTheFolderIsRefused) {
  std::filesystem::create_symlink(dir_ / "model.safetensors", offload() / "link.safetensors");
  write_index("link.safetensors");
  expect_refused("outside the offload folder");
  // A linked directory is resolved as well.
  std::filesystem::create_directory_symlink(dir_.path(), offload() / "up");
  write_index("up/model.safetensors");
  expect_refused("outside the offload folder");
}

TEST_F(OffloadConfinement, DatSymlinkOutOfTheFolderIsRefused) {
  testing::write_file(offload() / "index.json", R"({"w": {"dtype": "uint8", "shape": [8]}})");
  testing::write_file(dir_ / "secret", "12345678");
  std::filesystem::create_symlink(dir_ / "secret", offload() / "w.dat");
  expect_refused("outside the offload folder");
}

TEST_F(OffloadConfinement, FilesInsideTheFolderStillLoad) {
  std::filesystem::create_directories(offload() / "sub");
  std::filesystem::copy_file(dir_ / "model.safetensors", offload() / "sub" / "model.safetensors");
  // A symlink whose target stays inside the folder is fine.
  std::filesystem::create_symlink("sub/model.safetensors", offload() / "link.safetensors");
  for (const std::string name : {"sub/model.safetensors", "./sub/model.safetensors",
                                 "link.safetensors"}) {
    SCOPED_TRACE(name);
    write_index(name);
    EXPECT_TRUE(at::equal(OffloadFolder::open(offload())->load("w"), at::arange(4, at::kFloat)));
  }
}

TEST_F(OffloadConfinement, ErrorsNeverEchoTheTargetsBytes) {
  // A file that is no safetensors file: its first 8 bytes ("ferry-se") as a number would be
  // 7306091209958893926; the message must not carry them in any form.
  testing::write_file(offload() / "notes.safetensors", "ferry-secret text, not a checkpoint\n");
  write_index("notes.safetensors");
  const auto e = catch_error<CorruptFile>([&] { OffloadFolder::open(offload())->load("w"); });
  ASSERT_TRUE(e);
  EXPECT_THAT(e->what(), HasSubstr("notes.safetensors"));
  std::uint64_t prefix = 0;
  std::memcpy(&prefix, "ferry-se", 8);
  for (const std::string& text : {std::string(e->what()), e->expected(), e->actual()}) {
    EXPECT_THAT(text, ::testing::Not(HasSubstr(std::to_string(prefix))));
    EXPECT_THAT(text, ::testing::Not(HasSubstr("secret")));
  }
}

TEST(OffloadFromIndex, TrustsEntriesFerryBuiltAndChecksNames) {
  ScratchDir dir;
  save_safetensors(dir / "model.safetensors", {{"model.w", at::arange(4, at::kFloat)}});
  const OffloadIndex index{{.name = "w",
                            .safetensors_file = std::filesystem::absolute(dir / "model.safetensors"),
                            .weight_name = "model.w"}};
  // Nothing is read from the folder: it need not exist.
  const auto folder = OffloadFolder::from_index(dir / "offload", index);
  EXPECT_TRUE(at::equal(folder->load("w"), at::arange(4, at::kFloat)));
  EXPECT_EQ(folder->names(), std::vector<std::string>{"w"});
  EXPECT_THROW(OffloadFolder::from_index(dir.path(), {index[0], index[0]}), InvalidArgument);
  EXPECT_THROW(OffloadFolder::from_index(dir.path(), {{.name = "a/b", .dtype = DType::kF32}}),
               InvalidArgument);
  EXPECT_THROW(OffloadFolder::from_index(dir.path(), {{.name = "raw"}}), InvalidArgument);
}

TEST(OffloadWrite, FilesArePrivateToTheUser) {
  ScratchDir dir;
  offload_state_dict(dir.path(), {{"w", at::ones({4})}});
  for (const char* name : {"w.dat", "index.json"}) {
    SCOPED_TRACE(name);
    using std::filesystem::perms;
    const perms mode = std::filesystem::status(dir / name).permissions();
    EXPECT_EQ(mode & (perms::group_all | perms::others_all), perms::none);
    EXPECT_NE(mode & perms::owner_read, perms::none);
  }
}

}  // namespace
}  // namespace ferry::io
