#include "io/json_file.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <unordered_set>
#include <vector>

#include "ferry/core/error.h"
#include "io/atomic_file.h"
#include "io/printable.h"
#include "io/regular_file.h"

namespace ferry::io {

nlohmann::ordered_json parse_json(std::string_view text, std::string_view file) {
  constexpr int kMaxDepth = 64;
  std::vector<std::unordered_set<std::string>> keys;  // one set per open object
  auto callback = [&](int depth, nlohmann::ordered_json::parse_event_t event,
                      nlohmann::ordered_json& parsed) {
    using Event = nlohmann::ordered_json::parse_event_t;
    if (depth > kMaxDepth) {
      throw CorruptFile(fmt::format("{}: JSON nested too deeply: expected at most {} levels, "
                                    "got more",
                                    file, kMaxDepth),
                        ErrorFields{.file = std::string(file),
                                    .expected = fmt::format("at most {} levels", kMaxDepth)});
    }
    if (event == Event::object_start) keys.emplace_back();
    if (event == Event::object_end) keys.pop_back();
    if (event == Event::key && !keys.empty()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!keys.back().insert(key).second) {
        throw CorruptFile(fmt::format("{}: key '{}' appears twice in one object: expected each "
                                      "name once, got a second entry",
                                      file, printable(key)),
                          ErrorFields{.path = key,
                                      .file = std::string(file),
                                      .expected = "each name once",
                                      .actual = "twice"});
      }
    }
    return true;
  };
  try {
    return nlohmann::ordered_json::parse(text.begin(), text.end(), callback);
  } catch (const nlohmann::json::exception& e) {
    throw CorruptFile(
        fmt::format("{}: not valid JSON: {}", file, printable(e.what())),
        ErrorFields{
            .file = std::string(file), .expected = "valid JSON", .actual = printable(e.what())});
  }
}

std::string read_text_file(const std::filesystem::path& path, std::uint64_t max_size_bytes) {
  const RegularFile file = open_regular_file(path);
  auto too_large = [&](std::string_view actual) {
    return IoError(fmt::format("{} is too large to read as text: expected at most {} bytes, got {}",
                               path.string(), max_size_bytes, actual),
                   ErrorFields{.file = path.string(),
                               .expected = fmt::format("at most {} bytes", max_size_bytes),
                               .actual = std::string(actual)});
  };
  if (file.size_bytes > max_size_bytes) throw too_large(fmt::format("{} bytes", file.size_bytes));
  // Read to the end rather than trusting st_size (files of /proc report 0), but never past the
  // limit: a file that grows while read fails instead of filling memory.
  std::string text;
  text.resize(static_cast<std::size_t>(std::min<std::uint64_t>(file.size_bytes, max_size_bytes)));
  std::size_t done = 0;
  for (;;) {
    if (done == text.size()) {
      if (text.size() > max_size_bytes) throw too_large("more");
      text.resize(std::min<std::uint64_t>(std::max<std::size_t>(2 * text.size(), 4096),
                                          max_size_bytes + 1));
    }
    const ssize_t n = ::read(file.fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      throw IoError(fmt::format("cannot read {}: {}", path.string(), std::strerror(errno)),
                    ErrorFields{.file = path.string(), .actual = std::strerror(errno)});
    }
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  text.resize(done);
  return text;
}

void write_text_file(const std::filesystem::path& path, std::string_view text, mode_t mode) {
  AtomicFile file(path, mode);
  file.write(text);
  file.commit();
}

}  // namespace ferry::io
