#include "io/json_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <unordered_set>
#include <vector>

#include "ferry/core/error.h"
#include "io/atomic_file.h"
#include "io/printable.h"

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

std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw IoError(fmt::format("cannot open {}: {}", path.string(), std::strerror(errno)),
                  ErrorFields{.file = path.string()});
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    throw IoError(fmt::format("cannot read {}", path.string()), ErrorFields{.file = path.string()});
  }
  return std::move(text).str();
}

void write_text_file(const std::filesystem::path& path, std::string_view text) {
  AtomicFile file(path);
  file.write(text);
  file.commit();
}

}  // namespace ferry::io
