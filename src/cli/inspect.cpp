// `ferry inspect PATH [--json]`: what a checkpoint holds (a safetensors file, a sharded index, a
// folder holding either, or an offload folder) and whether it is valid. Every header is read
// and checked against its index; no tensor data is read, except the sizes of offload .dat files.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "cli/commands.h"
#include "cli/json_output.h"
#include "cli/paths.h"
#include "cli/sizes.h"
#include "ferry/core/bytes.h"
#include "ferry/core/error.h"
#include "ferry/core/shape.h"
#include "ferry/io/checkpoint_headers.h"

namespace ferry::cli {
namespace {

struct InspectOptions {
  std::string path;   // file, index or folder
  bool json = false;  // one JSON object instead of the table
};

struct Row {
  TensorInfo info;
  std::string file;  // relative to the checkpoint's folder where it lies inside it
};

struct Total {
  std::size_t n_tensors = 0;
  std::uint64_t size_bytes = 0;
  std::uint64_t n_parameters = 0;
};

std::uint64_t parameter_count(const TensorInfo& info) { return info.numel(); }

// "layers.2" before "layers.10": runs of digits compare by value (then by length, so "01"
// follows "1"), everything else bytewise.
bool natural_less(std::string_view a, std::string_view b) {
  auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
  std::size_t i = 0;
  std::size_t j = 0;
  while (i < a.size() && j < b.size()) {
    if (is_digit(a[i]) && is_digit(b[j])) {
      std::size_t ei = i;
      std::size_t ej = j;
      while (ei < a.size() && is_digit(a[ei])) ++ei;
      while (ej < b.size() && is_digit(b[ej])) ++ej;
      std::string_view da = a.substr(i, ei - i);
      std::string_view db = b.substr(j, ej - j);
      const std::size_t la = da.size();
      const std::size_t lb = db.size();
      while (da.size() > 1 && da.front() == '0') da.remove_prefix(1);
      while (db.size() > 1 && db.front() == '0') db.remove_prefix(1);
      if (da.size() != db.size()) return da.size() < db.size();
      if (da != db) return da < db;
      if (la != lb) return la < lb;
      i = ei;
      j = ej;
      continue;
    }
    if (a[i] != b[j]) return static_cast<unsigned char>(a[i]) < static_cast<unsigned char>(b[j]);
    ++i;
    ++j;
  }
  return a.size() - i < b.size() - j;
}

struct Report {
  std::string path;
  std::string format;
  std::vector<Row> rows;
  std::map<std::string, std::string> metadata;
  std::optional<std::uint64_t> index_total_size_bytes;
};

std::string display_file(const std::filesystem::path& file, const std::filesystem::path& base) {
  const auto relative = file.lexically_relative(base);
  if (relative.empty() || *relative.begin() == "..") return file.string();
  return relative.string();
}

Report build_report(const std::string& path) {
  io::CheckpointHeaders headers = io::read_checkpoint_headers(path);
  const io::CheckpointLocation& where = headers.location;
  Report report{.path = where.path.string(),
                .metadata = std::move(headers.metadata),
                .index_total_size_bytes = headers.index_total_size_bytes};
  std::filesystem::path base = where.path.parent_path();
  switch (where.kind) {
    case io::CheckpointKind::kSafetensors: report.format = "safetensors"; break;
    case io::CheckpointKind::kShardedIndex: report.format = "sharded safetensors"; break;
    case io::CheckpointKind::kOffloadFolder:
      report.format = "offload folder";
      base = where.path;
      break;
  }
  for (io::HeaderTensor& t : headers.tensors) {
    report.rows.push_back(Row{std::move(t.info), display_file(t.file, base)});
  }
  std::stable_sort(report.rows.begin(), report.rows.end(), [](const Row& a, const Row& b) {
    return natural_less(a.info.name, b.info.name);
  });
  return report;
}

std::uint64_t total_bytes(const Report& r) {
  std::uint64_t total = 0;
  for (const Row& row : r.rows) total += row.info.size_bytes();
  return total;
}

std::uint64_t total_parameters(const Report& r) {
  std::uint64_t total = 0;
  for (const Row& row : r.rows) total += parameter_count(row.info);
  return total;
}

std::map<std::string, Total> totals_by(const Report& r, bool by_dtype) {
  std::map<std::string, Total> totals;
  for (const Row& row : r.rows) {
    Total& t = totals[by_dtype ? std::string(safetensors_name(row.info.dtype)) : row.file];
    ++t.n_tensors;
    t.size_bytes += row.info.size_bytes();
    t.n_parameters += parameter_count(row.info);
  }
  return totals;
}

void print_report_json(const Report& r) {
  nlohmann::ordered_json out = json_header("inspect");
  out["path"] = r.path;
  out["format"] = r.format;
  out["valid"] = true;
  auto& tensors = out["tensors"] = nlohmann::ordered_json::array();
  for (const Row& row : r.rows) {
    tensors.push_back({{"name", row.info.name},
                       {"dtype", safetensors_name(row.info.dtype)},
                       {"shape", row.info.shape},
                       {"parameters", parameter_count(row.info)},
                       {"size_bytes", row.info.size_bytes()},
                       {"file", row.file}});
  }
  out["total_bytes"] = total_bytes(r);
  out["total_parameters"] = total_parameters(r);
  for (const bool by_dtype : {true, false}) {
    auto& totals = out[by_dtype ? "totals_by_dtype" : "totals_by_file"];
    totals = nlohmann::ordered_json::object();
    for (const auto& [key, t] : totals_by(r, by_dtype)) {
      totals[key] = {
          {"tensors", t.n_tensors}, {"parameters", t.n_parameters}, {"size_bytes", t.size_bytes}};
    }
  }
  out["metadata"] = r.metadata;
  if (r.index_total_size_bytes) out["index_total_size"] = *r.index_total_size_bytes;
  print_json(out);  // names come from files: invalid UTF-8 is replaced, not an error
}

void print_table(const Report& r) {
  std::size_t name_width = 4;
  std::size_t shape_width = 5;
  for (const Row& row : r.rows) {
    name_width = std::max(name_width, row.info.name.size());
    shape_width = std::max(shape_width, shape_string(row.info.shape).size());
  }
  fmt::print("{} ({})\n\n", r.path, r.format);
  fmt::print("{:<{}}  {:<7}  {:<{}}  {:>10}  {:>12}  {}\n", "name", name_width, "dtype",
             "shape", shape_width, "parameters", "size", "file");
  for (const Row& row : r.rows) {
    fmt::print("{:<{}}  {:<7}  {:<{}}  {:>10}  {:>12}  {}\n", row.info.name, name_width,
               safetensors_name(row.info.dtype), shape_string(row.info.shape), shape_width,
               format_count(parameter_count(row.info)), format_bytes(row.info.size_bytes()),
               row.file);
  }
  for (const bool by_dtype : {true, false}) {
    fmt::print("\ntotals by {}\n", by_dtype ? "dtype" : "file");
    for (const auto& [key, t] : totals_by(r, by_dtype)) {
      fmt::print("  {:<40}  {:>6} tensors  {:>10} parameters  {:>12}\n", key, t.n_tensors,
                 format_count(t.n_parameters), format_bytes(t.size_bytes));
    }
  }
  if (!r.metadata.empty()) {
    fmt::print("\nmetadata\n");
    for (const auto& [key, value] : r.metadata) fmt::print("  {}: {}\n", key, value);
  }
  if (r.index_total_size_bytes) {
    fmt::print("\nindex total_size: {} bytes\n", *r.index_total_size_bytes);
  }
  fmt::print("\n{} tensors, {} parameters ({}), {} ({} bytes)\nvalidation: OK\n",
             r.rows.size(), format_count(total_parameters(r)), total_parameters(r),
             format_bytes(total_bytes(r)), total_bytes(r));
}

int run_inspect(const InspectOptions& options) {
  require_path("inspect:", options.path, PathKind::kAny);
  const Report report = build_report(options.path);
  if (options.json) {
    print_report_json(report);
  } else {
    print_table(report);
  }
  return 0;
}

}  // namespace

void add_inspect_command(CLI::App& app, Runner& runner) {
  auto options = std::make_shared<InspectOptions>();
  CLI::App* cmd = app.add_subcommand("inspect", std::string(kInspectDescription));
  cmd->add_option("path", options->path,
                  "A .safetensors file, a *.index.json, a model folder or an offload folder")
      ->required();
  cmd->add_flag("--json", options->json, "Print one JSON object for scripts (docs/cli.md)");
  cmd->callback([&runner, options] { runner = [options] { return run_inspect(*options); }; });
}

}  // namespace ferry::cli
