#include "ferry/plan/estimate.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>

#include "ferry/plan/module_sizes.h"

namespace ferry::plan {
namespace {

std::string repeat(std::string_view s, std::size_t n) {
  std::string out;
  for (std::size_t i = 0; i < n; ++i) out += s;
  return out;
}

// Python's str.center.
std::string center(std::string_view text, std::size_t width) {
  if (text.size() >= width) return std::string(text);
  const std::size_t pad = width - text.size();
  const std::size_t left = pad / 2 + (pad & width & 1);
  return std::string(left, ' ') + std::string(text) + std::string(pad - left, ' ');
}

}  // namespace

std::vector<SizeEstimate> estimate_memory(const ModuleTree& tree, const NoSplit& no_split) {
  std::vector<std::uint64_t> bits(tree.size(), 0);
  for (std::size_t i = tree.size(); i-- > 0;) {
    const TreeNode& n = tree.nodes()[i];
    if (n.is_tensor() && n.counted) {
      bits[i] = n.numel * static_cast<std::uint64_t>(
                              n.element.is_floating() ? 32 : n.element.accounting_bits());
    }
    if (n.parent >= 0) bits[static_cast<std::size_t>(n.parent)] += bits[i];
  }
  const std::vector<NodeId> entries = top_level_entries(tree);
  const MaxLayer largest = get_max_layer_size(tree, entries, bits, no_split_flags(tree, no_split));
  const double total = static_cast<double>(bits[0]) / 8;
  const double layer = static_cast<double>(largest.size_bits) / 8;
  const std::uint64_t b = bits[0] / 8;
  std::vector<SizeEstimate> out;
  out.push_back({"float32", layer, total, static_cast<double>(4 * b)});
  out.push_back({"float16", layer / 2, total / 2, static_cast<double>(std::max(b + b / 2, 2 * b))});
  out.push_back({"int8", layer / 4, total / 4, std::nullopt});
  out.push_back({"int4", layer / 8, total / 8, std::nullopt});
  return out;
}

std::string convert_bytes(double size, bool is_integer) {
  static constexpr std::array<std::string_view, 5> kUnits{"bytes", "KB", "MB", "GB", "TB"};
  std::string_view unit = "PB";
  for (const std::string_view u : kUnits) {
    if (size < 1024.0) {
      unit = u;
      break;
    }
    size /= 1024.0;
    is_integer = false;
  }
  if (is_integer) return fmt::format("{} {}", static_cast<std::uint64_t>(size), unit);
  std::string number = fmt::format("{:.2f}", size);
  while (number.back() == '0' && number[number.size() - 2] != '.') number.pop_back();
  return fmt::format("{} {}", number, unit);
}

std::string format_estimate_table(std::string_view model_name,
                                  const std::vector<SizeEstimate>& rows) {
  const std::array<std::string, 4> headers{"dtype", "Largest Layer", "Total Size",
                                           "Training using Adam"};
  std::vector<std::array<std::string, 4>> cells;
  for (const SizeEstimate& r : rows) {
    const bool exact = r.dtype == "float32";
    cells.push_back({r.dtype, convert_bytes(r.largest_layer_bytes, exact),
                     convert_bytes(r.total_bytes, exact),
                     r.training_bytes ? convert_bytes(*r.training_bytes, true) : "N/A"});
  }
  std::array<std::size_t, 4> widths{};
  for (std::size_t i = 0; i < 4; ++i) {
    widths[i] = headers[i].size();
    for (const auto& row : cells) widths[i] = std::max(widths[i], row[i].size());
  }
  std::size_t inner = 3;
  for (const std::size_t w : widths) inner += w;
  auto rule = [&](std::string_view left, std::string_view mid, std::string_view right) {
    std::string out(left);
    for (std::size_t i = 0; i < 4; ++i)
      out += repeat("─", widths[i]) + std::string(i < 3 ? mid : right);
    return out + "\n";
  };
  auto row_text = [&](const std::array<std::string, 4>& row) {
    std::string out = "│";
    for (std::size_t i = 0; i < 4; ++i) out += center(row[i], widths[i]) + "│";
    return out + "\n";
  };
  std::string out = "┌" + repeat("─", inner) + "┐\n";
  out += "│" + center(fmt::format("Memory Usage for loading `{}`", model_name), inner) + "│\n";
  out += rule("├", "┬", "┤");
  out += row_text(headers);
  out += rule("├", "┼", "┤");
  for (const auto& row : cells) out += row_text(row);
  out += rule("└", "┴", "┘");
  return out;
}

}  // namespace ferry::plan
