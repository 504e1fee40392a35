#include "io/confined_path.h"

#include <algorithm>
#include <system_error>

namespace ferry::io {

bool is_confined_name(std::string_view name) {
  if (name.empty() || name.find('\0') != std::string_view::npos) return false;
  const std::filesystem::path p(name);
  if (p.is_absolute() || p.has_root_name() || p.has_root_directory()) return false;
  return std::none_of(p.begin(), p.end(), [](const auto& part) { return part == ".."; });
}

std::optional<std::filesystem::path> confined_path(const std::filesystem::path& folder,
                                                   std::string_view name, Symlinks symlinks) {
  if (!is_confined_name(name)) return std::nullopt;
  std::filesystem::path joined = folder / std::filesystem::path(name);
  if (symlinks == Symlinks::kFollow) return joined;
  // Lexical checks pass "link/x" where "link" points at "/"; only the resolved target tells.
  std::error_code ec;
  const std::filesystem::path root = std::filesystem::weakly_canonical(folder, ec);
  if (ec) return std::nullopt;
  const std::filesystem::path target = std::filesystem::weakly_canonical(joined, ec);
  if (ec) return std::nullopt;
  const std::filesystem::path inside = target.lexically_relative(root);
  if (inside.empty() || inside == "." || *inside.begin() == "..") return std::nullopt;
  return joined;
}

}  // namespace ferry::io
