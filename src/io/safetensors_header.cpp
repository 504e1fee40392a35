#include "ferry/io/safetensors_header.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <optional>
#include <unordered_set>

#include "ferry/core/error.h"
#include "ferry/core/shape.h"
#include "io/printable.h"

namespace ferry::io {
namespace {

using Json = nlohmann::json;

// Codes of newer safetensors releases that ferry does not represent: a valid file, not a corrupt
// one, so they raise Unsupported.
constexpr std::array<std::string_view, 7> kNewerCodes{"F4",  "F6_E2M3",     "F6_E3M2",    "F8_E8M0",
                                                      "C64", "F8_E4M3FNUZ", "F8_E5M2FNUZ"};

// Builds errors that name the file and, where known, the tensor.
class Failure {
 public:
  explicit Failure(std::string_view file) : file_(file) {}
  const std::string& file() const { return file_; }

  [[noreturn]] void file_level(std::string_view problem, std::string expected,
                               std::string actual) const {
    throw CorruptFile(fmt::format("safetensors file {}: {}: expected {}, got {}", file_, problem,
                                  expected, actual),
                      ErrorFields{.file = file_, .expected = expected, .actual = actual});
  }

  [[noreturn]] void tensor(std::string_view name, std::string_view problem, std::string expected,
                           std::string actual) const {
    throw CorruptFile(
        fmt::format("tensor '{}' in {}: {}: expected {}, got {}", printable(name), file_, problem,
                    expected, actual),
        ErrorFields{
            .path = std::string(name), .file = file_, .expected = expected, .actual = actual});
  }

 private:
  std::string file_;
};

// A SAX handler that reads exactly the safetensors header grammar, so no DOM is built for a
// hostile header and every structural fault is reported with the tensor it belongs to. Values
// of unknown keys inside a tensor entry are skipped, as the reference reader ignores them.
class HeaderHandler : public nlohmann::json_sax<Json> {
 public:
  HeaderHandler(const Failure& fail, SafetensorsHeader& out) : fail_(fail), out_(out) {}

  bool null() override {
    if (ignored()) return true;
    if (depth_ == 1 && name_ == "__metadata__") return true;  // "__metadata__": null is allowed
    return unexpected("null");
  }
  bool boolean(bool) override { return ignored() || unexpected("a boolean"); }
  bool number_integer(number_integer_t v) override {
    if (ignored()) return true;
    if (v >= 0) return number_unsigned(static_cast<number_unsigned_t>(v));
    return unexpected(fmt::format("the negative number {}", v));
  }
  bool number_unsigned(number_unsigned_t v) override {
    if (ignored()) return true;
    if (depth_ == 3 && field_ == Field::kShape) {
      if (v > static_cast<number_unsigned_t>(std::numeric_limits<std::int64_t>::max())) {
        return unexpected(fmt::format("the dimension {}", v));
      }
      entry_.info.shape.push_back(static_cast<std::int64_t>(v));
      return true;
    }
    if (depth_ == 3 && field_ == Field::kOffsets) {
      if (n_offsets_ >= 2) fail_.tensor(name_, "data_offsets", "2 numbers", "more");
      offsets_[n_offsets_++] = v;
      return true;
    }
    return unexpected(fmt::format("the number {}", v));
  }
  bool number_float(number_float_t, const string_t& s) override {
    return ignored() || unexpected(fmt::format("the number {}", s));
  }
  bool binary(binary_t&) override { return ignored() || unexpected("binary data"); }

  bool string(string_t& s) override {
    if (ignored()) return true;
    if (depth_ == 2 && in_metadata_) {
      out_.metadata[metadata_key_] = s;
      return true;
    }
    if (depth_ == 2 && field_ == Field::kDType) {
      set_dtype(s);
      return true;
    }
    return unexpected(fmt::format("the string \"{}\"", printable(s)));
  }

  bool start_object(std::size_t) override {
    if (ignored()) return skip_open();
    if (depth_ == 0) {
      depth_ = 1;
      saw_object_ = true;
      return true;
    }
    if (depth_ == 1) {
      depth_ = 2;
      field_ = Field::kNone;
      in_metadata_ = name_ == "__metadata__";
      if (!in_metadata_) start_entry();
      return true;
    }
    return unexpected("an object");
  }
  bool end_object() override {
    if (skipping()) return skip_close();
    if (depth_ == 2 && !in_metadata_) finish_entry();
    --depth_;
    in_metadata_ = false;
    return true;
  }
  bool start_array(std::size_t) override {
    if (ignored()) return skip_open();
    if (depth_ == 2 && !in_metadata_ && (field_ == Field::kShape || field_ == Field::kOffsets)) {
      depth_ = 3;
      return true;
    }
    return unexpected("an array");
  }
  bool end_array() override {
    if (skipping()) return skip_close();
    depth_ = 2;
    return true;
  }

  bool key(string_t& k) override {
    if (skipping()) return true;
    if (depth_ == 1) {
      if (!names_.insert(k).second) {
        fail_.tensor(k, "duplicate name", "each name once", "a second entry");
      }
      name_ = k;
    } else if (in_metadata_) {
      metadata_key_ = k;
    } else {
      field_ = k == "dtype"          ? Field::kDType
               : k == "shape"        ? Field::kShape
               : k == "data_offsets" ? Field::kOffsets
                                     : Field::kOther;
      bool* seen = field_ == Field::kDType     ? &has_dtype_
                   : field_ == Field::kShape   ? &has_shape_
                   : field_ == Field::kOffsets ? &has_offsets_
                                               : nullptr;
      if (seen && *seen) fail_.tensor(name_, "duplicate field", "each field once", k);
      if (seen) *seen = true;
    }
    return true;
  }

  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& ex) override {
    // nlohmann's message quotes the offending token; keep it on one printable line.
    fail_.file_level(
        "header is not valid UTF-8 JSON", "a JSON object",
        fmt::format("an error at byte {} of the header ({})", position, printable(ex.what())));
  }

  // The top level must have been an object.
  void finish() const {
    if (!saw_object_) fail_.file_level("header is not a JSON object", "{...}", "another value");
  }

 private:
  enum class Field { kNone, kDType, kShape, kOffsets, kOther };

  bool skipping() const { return skip_depth_ > 0; }
  // Inside, or at, the value of an unknown key of a tensor entry.
  bool ignored() const {
    return skip_depth_ > 0 || (depth_ == 2 && !in_metadata_ && field_ == Field::kOther);
  }
  bool skip_open() {
    ++skip_depth_;
    return true;
  }
  bool skip_close() {
    --skip_depth_;
    return true;
  }

  // A value where the grammar wants something else.
  bool unexpected(std::string what) {
    if (depth_ == 0) fail_.file_level("header is not a JSON object", "{...}", std::move(what));
    if (depth_ == 1 && name_ == "__metadata__") {
      fail_.file_level("__metadata__ is not an object", "a string-to-string map", std::move(what));
    }
    if (depth_ == 1)
      fail_.tensor(name_, "entry is not an object", "{dtype, shape, data_offsets}",
                   std::move(what));
    if (in_metadata_) {
      fail_.file_level(fmt::format("__metadata__ value of '{}'", printable(metadata_key_)),
                       "a string", std::move(what));
    }
    static constexpr std::array<std::string_view, 5> kFieldNames{"a field", "dtype", "shape",
                                                                 "data_offsets", "a field"};
    const auto index = static_cast<std::size_t>(field_);
    fail_.tensor(name_, kFieldNames[index],
                 field_ == Field::kDType ? "a dtype code string" : "non-negative integers",
                 std::move(what));
  }

  void start_entry() {
    saw_object_ = true;
    entry_ = SafetensorsEntry{};
    entry_.info.name = name_;
    field_ = Field::kNone;
    has_dtype_ = has_shape_ = has_offsets_ = false;
    n_offsets_ = 0;
  }

  void set_dtype(const std::string& code) {
    if (auto d = dtype_from_safetensors(code)) {
      entry_.info.dtype = *d;
      return;
    }
    if (std::find(kNewerCodes.begin(), kNewerCodes.end(), code) != kNewerCodes.end()) {
      throw Unsupported(fmt::format("tensor '{}' in {}: dtype {} is not supported by ferry",
                                    printable(name_), fail_.file(), code),
                        ErrorFields{.path = name_,
                                    .file = fail_.file(),
                                    .expected = "a dtype ferry supports",
                                    .actual = code});
    }
    fail_.tensor(name_, "unknown dtype", "a safetensors dtype code (F32, F16, BF16, I64, ...)",
                 fmt::format("\"{}\"", printable(code)));
  }

  void finish_entry() {
    if (!has_dtype_) fail_.tensor(name_, "missing field", "dtype", "no dtype");
    if (!has_shape_) fail_.tensor(name_, "missing field", "shape", "no shape");
    if (!has_offsets_ || n_offsets_ != 2) {
      fail_.tensor(name_, "data_offsets", "[begin, end]", fmt::format("{} numbers", n_offsets_));
    }
    entry_.begin_bytes = offsets_[0];
    entry_.end_bytes = offsets_[1];
    if (entry_.end_bytes < entry_.begin_bytes) {
      fail_.tensor(name_, "data_offsets are reversed", "begin <= end",
                   fmt::format("[{}, {}]", entry_.begin_bytes, entry_.end_bytes));
    }
    // numel × element size, refusing overflow (a zero dimension makes any product zero).
    const auto& shape = entry_.info.shape;
    std::uint64_t bytes = static_cast<std::uint64_t>(element_size(entry_.info.dtype));
    if (std::find(shape.begin(), shape.end(), 0) != shape.end()) bytes = 0;
    for (std::int64_t d : shape) {
      if (bytes != 0 && __builtin_mul_overflow(bytes, static_cast<std::uint64_t>(d), &bytes)) {
        fail_.tensor(name_, "shape is too large", "a byte size below 2^64", shape_string(shape));
      }
    }
    const std::uint64_t range = entry_.end_bytes - entry_.begin_bytes;
    if (bytes != range) {
      fail_.tensor(
          name_, "shape does not match data_offsets",
          fmt::format("{} bytes for {} {}", bytes, safetensors_name(entry_.info.dtype),
                      shape_string(shape)),
          fmt::format("{} bytes in [{}, {}]", range, entry_.begin_bytes, entry_.end_bytes));
    }
    out_.entries.push_back(std::move(entry_));
  }

  const Failure& fail_;
  SafetensorsHeader& out_;
  int depth_ = 0;       // 1: top object, 2: a tensor entry or __metadata__, 3: shape/offsets
  int skip_depth_ = 0;  // > 0 while skipping the value of an unknown key
  bool saw_object_ = false;
  bool in_metadata_ = false;
  std::string name_;
  std::string metadata_key_;
  Field field_ = Field::kNone;
  SafetensorsEntry entry_;
  bool has_dtype_ = false;
  bool has_shape_ = false;
  bool has_offsets_ = false;
  std::array<std::uint64_t, 2> offsets_{};
  int n_offsets_ = 0;
  std::unordered_set<std::string> names_;
};

// The ranges must tile the data region: sorted, from 0, each starting where the last ended,
// the last ending at the end of the file (reference: MetadataIncompleteBuffer, InvalidOffset).
void check_coverage(const Failure& fail, std::vector<SafetensorsEntry>& entries,
                    std::uint64_t data_bytes) {
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    return std::tie(a.begin_bytes, a.end_bytes, a.info.name) <
           std::tie(b.begin_bytes, b.end_bytes, b.info.name);
  });
  std::uint64_t expected = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const SafetensorsEntry& e : entries) {
    const std::string range = fmt::format("[{}, {}]", e.begin_bytes, e.end_bytes);
    if (e.end_bytes > data_bytes) {
      fail.tensor(e.info.name, "data_offsets out of bounds",
                  fmt::format("an end <= {} (the data region's size)", data_bytes), range);
    }
    if (e.begin_bytes < expected) {
      fail.tensor(
          e.info.name, "data_offsets overlap another tensor",
          fmt::format("a begin >= {} (end of '{}')", expected, printable(previous->info.name)),
          range);
    }
    if (e.begin_bytes > expected) {
      fail.tensor(e.info.name, "gap in the data region before this tensor",
                  fmt::format("a begin of {} ({})", expected,
                              previous ? fmt::format("end of '{}'", printable(previous->info.name))
                                       : std::string("start of data")),
                  range);
    }
    expected = e.end_bytes;
    previous = &e;
  }
  if (expected != data_bytes) {
    fail.file_level(previous ? fmt::format("data region continues after the last tensor '{}'",
                                           printable(previous->info.name))
                             : std::string("data region has bytes but the header no tensors"),
                    fmt::format("{} bytes of data", expected), fmt::format("{} bytes", data_bytes));
  }
}

}  // namespace

SafetensorsHeader parse_safetensors_header(std::span<const std::byte> file_bytes,
                                           std::string_view file_name) {
  return parse_safetensors_header(file_bytes, file_bytes.size(), file_name);
}

SafetensorsHeader parse_safetensors_header(std::span<const std::byte> file_bytes,
                                           std::uint64_t file_size, std::string_view file_name) {
  const Failure fail(file_name);
  FERRY_ASSERT(file_bytes.size() <= file_size, "{} bytes of a {}-byte file", file_bytes.size(),
               file_size);
  if (file_size < 8) {
    fail.file_level(file_size == 0 ? "file is empty" : "file is too short for a header length",
                    "at least 8 bytes", fmt::format("{} bytes", file_size));
  }
  std::uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, file_bytes.data(), 8);  // little-endian, as the host (checked)
  // An implausible length is not echoed: for a file that is not safetensors at all (a text
  // file, /etc/passwd) those 8 bytes are its content, which an error message must not leak.
  // A plausible one (at most kMaxHeaderBytes, < 2^27) has five zero bytes: no text.
  if (header_bytes > kMaxHeaderBytes) {
    fail.file_level("not a safetensors file: the header length prefix is too large",
                    fmt::format("a header of at most {} bytes", kMaxHeaderBytes), "a larger value");
  }
  if (header_bytes > file_size - 8) {
    fail.file_level(fmt::format("header length {} runs past the end of the file ({} bytes)",
                                header_bytes, file_size),
                    fmt::format("at most {} bytes", file_size - 8),
                    fmt::format("{} bytes", header_bytes));
  }
  FERRY_ASSERT(file_bytes.size() >= 8 + header_bytes, "header of {} needs {} bytes, given {}",
               file_name, 8 + header_bytes, file_bytes.size());
  SafetensorsHeader out;
  out.data_offset_bytes = 8 + header_bytes;
  HeaderHandler handler(fail, out);
  const char* begin = reinterpret_cast<const char*>(file_bytes.data()) + 8;
  // The JSON reader stops at a NUL as at the end of input, which would accept any bytes after
  // it. JSON text never holds a raw NUL, and the padding is spaces.
  if (const void* nul = std::memchr(begin, '\0', header_bytes)) {
    fail.file_level("header holds a NUL byte", "UTF-8 JSON padded with spaces",
                    fmt::format("a NUL at byte {} of the {}-byte header",
                                static_cast<const char*>(nul) - begin, header_bytes));
  }
  Json::sax_parse(begin, begin + header_bytes, &handler, nlohmann::detail::input_format_t::json,
                  /*strict=*/true);
  handler.finish();
  check_coverage(fail, out.entries, file_size - out.data_offset_bytes);
  return out;
}

SafetensorsHeader read_safetensors_header_with(
    std::uint64_t file_size_bytes,
    const std::function<std::size_t(std::uint64_t, std::span<std::byte>)>& read,
    std::string_view file_name) {
  std::vector<std::byte> start(std::min<std::uint64_t>(file_size_bytes, 8));
  start.resize(read(0, start));
  if (start.size() == 8) {
    std::uint64_t header_bytes = 0;
    std::memcpy(&header_bytes, start.data(), 8);
    if (header_bytes <= kMaxHeaderBytes && header_bytes <= file_size_bytes - 8) {
      start.resize(8 + header_bytes);
      start.resize(read(0, start));
    }
  }
  return parse_safetensors_header(start, file_size_bytes, file_name);
}

}  // namespace ferry::io
