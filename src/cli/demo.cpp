// `ferry demo`: the main job. For now it builds a 100B-parameter model on the meta device and
// prints its size and a summary; later issues make it a real offloaded run.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <map>

#include "cli/commands.h"
#include "cli/json_output.h"
#include "cli/sizes.h"
#include "ferry/core/bytes.h"
#include "ferry/core/dtype.h"
#include "ferry/core/memory.h"
#include "ferry/core/shape.h"
#include "ferry/nn/containers.h"
#include "ferry/nn/init.h"
#include "ferry/nn/linear.h"

namespace ferry::cli {
namespace {

struct DemoOptions {
  int layers = 1000;
  std::int64_t width = 10000;
  bool json = false;
};

int run_demo(const DemoOptions& options) {
  const Bytes rss_before = current_rss();
  const auto start = std::chrono::steady_clock::now();
  auto model = std::make_shared<nn::Sequential>();
  {
    nn::InitEmptyWeights guard;
    for (int i = 0; i < options.layers; ++i) {
      model->push_back(std::make_shared<nn::Linear>(options.width, options.width));
    }
  }
  const double build_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  const Bytes rss_after = current_rss();

  std::uint64_t n_params = 0;
  std::uint64_t size_bytes = 0;
  std::size_t on_meta = 0;
  const auto params = model->named_parameters();
  for (const auto& p : params) {
    n_params += static_cast<std::uint64_t>(p.tensor().numel());
    size_bytes += static_cast<std::uint64_t>(p.tensor().numel()) *
                  static_cast<std::uint64_t>(p.tensor().element_size());
    on_meta += p.tensor().is_meta() ? 1 : 0;
  }
  std::map<std::string, int> classes;
  for (const auto& m : model->named_modules()) ++classes[m.module->class_name()];

  const auto gpus = probe_gpus();
  if (options.json) {
    nlohmann::ordered_json j = json_header("demo");
    j["layers"] = options.layers;
    j["width"] = options.width;
    j["build_ms"] = build_ms;
    j["rss_growth_bytes"] = rss_after > rss_before ? rss_after.value() - rss_before.value() : 0;
    j["parameters"] = n_params;
    j["tensors"] = params.size();
    j["tensors_on_meta"] = on_meta;
    nlohmann::ordered_json sizes = nlohmann::ordered_json::object();
    for (DType d : {DType::kF32, DType::kF16, DType::kI8}) {
      sizes[std::string(torch_name(d))] = n_params * static_cast<std::uint64_t>(element_size(d));
    }
    j["size_bytes_as"] = sizes;
    j["size_bytes_as_stored"] = size_bytes;
    j["modules"] = classes;
    j["available_ram_bytes"] = available_ram().value();
    nlohmann::ordered_json gpu_list = nlohmann::ordered_json::array();
    for (const auto& g : gpus) {
      gpu_list.push_back(
          {{"index", g.index}, {"free_bytes", g.free.value()}, {"total_bytes", g.total.value()}});
    }
    j["gpus"] = gpu_list;
    print_json(j);
    return 0;
  }
  fmt::print("ferry demo: Sequential of {} x Linear({}, {}) built on the meta device\n",
             options.layers, options.width, options.width);
  fmt::print("  build time        {:.1f} ms\n", build_ms);
  fmt::print("  RSS growth        {}\n",
             format_bytes(rss_after > rss_before ? rss_after.value() - rss_before.value() : 0));
  // A count with its noun, never a bare "100.0 B" that reads as bytes.
  fmt::print("  parameters        {} parameters ({}) in {} tensors, {} on meta\n",
             format_count(n_params), n_params, params.size(), on_meta);
  for (DType d : {DType::kF32, DType::kF16, DType::kI8}) {
    fmt::print("  size as {:<9} {}\n", torch_name(d),
               format_bytes(n_params * static_cast<std::uint64_t>(element_size(d))));
  }
  fmt::print("  size as stored    {}\n", format_bytes(size_bytes));
  fmt::print("  modules          ");
  for (const auto& [name, count] : classes) fmt::print(" {} x {}", count, name);
  fmt::print("\n  first entries     ");
  for (std::size_t i = 0; i < params.size() && i < 3; ++i) {
    fmt::print("{}{} {}", i ? ", " : "", params[i].name, shape_string(params[i].tensor().sizes()));
  }
  fmt::print("\n");
  fmt::print("  available RAM     {}\n", available_ram().to_string());
  fmt::print("  GPUs              {}\n", gpus.size());
  for (const auto& g : gpus) {
    fmt::print("    gpu {}: {} free of {}\n", g.index, g.free.to_string(), g.total.to_string());
  }
  return 0;
}

}  // namespace

void add_demo_command(CLI::App& app, Runner& runner) {
  auto options = std::make_shared<DemoOptions>();
  CLI::App* cmd =
      app.add_subcommand("demo", std::string(kDemoDescription));
  cmd->add_option("--layers", options->layers, "Number of Linear layers")
      ->check(CLI::Range(1, 1000000));
  cmd->add_option("--width", options->width, "in = out features of each Linear")
      ->check(CLI::Range(1, 1000000));
  cmd->add_flag("--json", options->json, "Print one JSON object (docs/cli.md)");
  cmd->callback([&runner, options] { runner = [options] { return run_demo(*options); }; });
}

}  // namespace ferry::cli
