#include "ferry/dispatch/dispatch_model.h"

#include <fmt/format.h>

#include <filesystem>
#include <set>

#include "ferry/core/devices.h"
#include "ferry/core/dtype.h"
#include "ferry/core/error.h"
#include "ferry/core/log.h"
#include "ferry/dispatch/weights_map.h"
#include "ferry/io/offload_folder.h"
#include "ferry/nn/tied.h"

namespace ferry::dispatch {
namespace {

// The root hook of a dispatched model remembers its device map.
class DeviceMapRecord final : public ModelHook {
 public:
  explicit DeviceMapRecord(plan::DeviceMap map) : map_(std::move(map)) {}
  const plan::DeviceMap& map() const noexcept { return map_; }

 private:
  plan::DeviceMap map_;
};

bool has_any_hook(nn::Module& model) {
  for (const auto& m : model.named_modules()) {
    if (m.module->hook()) return true;
  }
  return false;
}

std::vector<std::string> keys_on(const plan::DeviceMap& map, bool (Placement::*pred)() const) {
  std::vector<std::string> out;
  for (const auto& [key, p] : map.entries()) {
    if ((p.*pred)()) out.push_back(key);
  }
  return out;
}

}  // namespace

void check_tied_parameters_on_same_device(nn::Module& model, const plan::DeviceMap& device_map) {
  for (const auto& group : nn::find_tied_parameters(model)) {
    std::vector<std::string> where;
    std::set<std::string> distinct;
    for (const std::string& name : group) {
      const auto p = device_map.placement_of(name);
      const std::string text = p ? p->to_string() : "None";
      where.push_back(fmt::format("'{}': {}", name, text));
      distinct.insert(text);
    }
    if (distinct.size() > 1) {
      log_warning(
          "Tied parameters are on different devices: {{{}}}. Please modify your custom device map "
          "or set `device_map='auto'`. ",
          fmt::join(where, ", "));
    }
  }
}

void dispatch_model(nn::Module& model, const plan::DeviceMap& device_map, DispatchOptions options) {
  plan::check_device_map(model, device_map);
  check_tied_parameters_on_same_device(model, device_map);
  const std::vector<Placement> devices = device_map.placements();
  if (devices.size() > 1 || device_map.uses(Placement::disk()) || options.force_hooks) {
    const ExecutionDevice main = options.main_device.value_or(plan::main_device(device_map));
    WeightsMap cpu_state = options.state_dict;
    const std::vector<std::string> cpu_modules = keys_on(device_map, &Placement::is_cpu);
    if (!main.is_cpu() && !cpu_state && !cpu_modules.empty()) {
      cpu_state = cpu_weights(
          extract_submodules_state_dict(model.state_dict({.keep_tied = true}), cpu_modules));
    }
    const std::vector<std::string> disk_modules = keys_on(device_map, &Placement::is_disk);
    WeightsMap disk_state = options.offload_index;
    if (!disk_modules.empty() && !disk_state) {
      if (options.offload_dir.empty()) {
        throw InvalidDeviceMap(
            fmt::format("We need an `offload_dir` to dispatch this model according to this "
                        "`device_map`, the following submodules need to be offloaded: {}.",
                        fmt::join(disk_modules, ", ")),
            ErrorFields{.path = fmt::format("{}", fmt::join(disk_modules, ", "))});
      }
      if (!std::filesystem::exists(options.offload_dir / "index.json")) {
        io::offload_state_dict(
            options.offload_dir,
            extract_submodules_state_dict(model.state_dict({.keep_tied = true}), disk_modules));
      }
      disk_state = io::OffloadFolder::open(options.offload_dir);
    }
    // Every block's execution device and offloading, from one rule (Note [Where a block
    // computes]); the loops below ask it too, never the placement directly.
    std::map<std::string, ExecutionDevice> execution;
    std::map<std::string, bool> offload;
    for (const auto& [key, p] : device_map.entries()) {
      const plan::BlockRole role = plan::role_of(p, main);
      execution.insert_or_assign(key, role.device);
      offload[key] = role.offloaded;
    }
    execution.emplace("", main);
    std::shared_ptr<Prefetcher> prefetcher;
    if (options.prefetch &&
        std::any_of(offload.begin(), offload.end(), [](const auto& kv) { return kv.second; })) {
      prefetcher = std::make_shared<Prefetcher>(*options.prefetch);
    }
    const WeightsMap weights = combine_weights({cpu_state, disk_state});
    // Note [Tied weights split between resident and offloaded modules]
    // A tied group is one slot. When one of its names rests on a device and another is
    // offloaded, the offloaded module's hook sends the shared slot to meta at init; the resident
    // member must keep its weight, so the slot is put back on the resident member's device after
    // the hooks are attached. The offloaded module then finds it materialized and uses it as is
    // (Note [Tied weights across placements]).
    struct Resident {
      std::string name;
      nn::SlotPtr slot;
      at::Tensor value;  // before hooks; meta when the checkpoint sent the group to disk
      ExecutionDevice device;
    };
    std::vector<Resident> residents;
    const auto tied_groups = nn::find_tied_parameters(model);
    for (const auto& group : tied_groups) {
      for (const std::string& name : group) {
        const auto p = device_map.placement_of(name);
        if (!p) continue;
        if (const plan::BlockRole role = plan::role_of(*p, main); !role.offloaded) {
          nn::NamedTensor t = model.find_tensor(name);
          residents.push_back({name, t.slot(), t.tensor(), role.device});
          break;
        }
      }
    }
    attach_align_device_hook_on_blocks(
        model, execution, offload,
        AttachOptions{.weights_map = weights,
                      .offload_buffers = options.offload_buffers,
                      .skip_keys = options.skip_keys,
                      .preload_module_classes = options.preload_module_classes,
                      .prefetcher = prefetcher});
    if (prefetcher) add_prefetch_boundary(model, prefetcher);
    if (options.compute.where == ComputePolicy::Where::kWeights) {
      // Blocks streamed from RAM may compute where their weights rest for small calls.
      for (const auto& m : model.named_modules()) {
        const auto p = device_map.placement_of(m.name);
        if (m.name.empty() || !p || !p->is_cpu() || !plan::role_of(*p, main).offloaded) continue;
        for (AlignDevicesHook* h : find_hooks<AlignDevicesHook>(*m.module)) {
          h->compute_at_rest(ExecutionDevice::cpu(), options.compute.max_rows);
        }
      }
    }
    for (Resident& r : residents) {
      if (r.value.is_meta()) {
        const auto group = std::find_if(tied_groups.begin(), tied_groups.end(), [&](const auto& g) {
          return std::find(g.begin(), g.end(), r.name) != g.end();
        });
        const auto stored = std::find_if(group->begin(), group->end(), [&](const std::string& n) {
          return weights && weights->contains(n);
        });
        FERRY_CHECK(stored != group->end(), MissingTensor,
                    "tied parameter '{}' rests on {} but no weights map holds any of its names",
                    r.name, r.device.to_string());
        r.value = weights->load(*stored, {.dtype = from_scalar_type(r.value.scalar_type())});
      }
      r.slot->assign(move_to(r.value, r.device), r.name);
    }
    std::vector<std::string> offloaded_to;
    for (Placement p : devices) {
      if (p.is_cpu() || p.is_disk()) offloaded_to.push_back(p.to_string());
    }
    if (!offloaded_to.empty()) {
      // Accelerate warns here; every offloaded run would then warn about what it was asked to
      // do, so ferry says it at info level (docs/deviations.md).
      log_info("Some parameters are on the meta device because they were offloaded to the {}.",
               fmt::join(offloaded_to, " and "));
    }
    nn::retie_parameters(model, nn::find_tied_parameters(model));
  } else if (!devices.empty()) {
    move_module(model, plan::main_device(device_map));  // the one device, GPU or CPU
  }
  // Remember the map on the root, beside its own hook, without re-running that hook's lifecycle.
  std::shared_ptr<ModelHook> record = std::make_shared<DeviceMapRecord>(device_map);
  if (std::shared_ptr<ModelHook> root = model.hook()) {
    // One flat SequentialHook, so find_hooks sees every hook of the root.
    std::vector<std::shared_ptr<ModelHook>> hooks{root};
    if (auto* seq = dynamic_cast<SequentialHook*>(root.get())) hooks = seq->hooks();
    hooks.push_back(std::move(record));
    model.set_hook(std::make_shared<SequentialHook>(std::move(hooks)));
  } else {
    model.set_hook(std::move(record));
  }
}

std::optional<plan::DeviceMap> hf_device_map(const nn::Module& model) {
  const auto records = find_hooks<DeviceMapRecord>(model);
  if (records.empty()) return std::nullopt;
  return records.back()->map();
}

namespace {

// cpu_offload and disk_offload: every submodule offloaded to `weights`, run on the execution
// device (default: where the first parameter with data is, else the CPU), outputs returned to
// where the inputs came from.
void offload_every_module(nn::Module& model, const OffloadOptions& options, WeightsMap weights) {
  ExecutionDevice exec = ExecutionDevice::cpu();
  if (options.execution_device) {
    exec = *options.execution_device;
  } else {
    for (const auto& p : model.named_parameters()) {
      if (auto where = placement_of(p.tensor())) {
        exec = *where;
        break;
      }
    }
  }
  add_hook_to_module(
      model, std::make_shared<AlignDevicesHook>(AlignDevicesOptions{.io_same_device = true}),
      /*append=*/true);
  std::shared_ptr<Prefetcher> prefetcher =
      options.prefetch ? std::make_shared<Prefetcher>(*options.prefetch) : nullptr;
  attach_align_device_hook(model, exec, /*offload=*/true,
                           AttachOptions{.weights_map = std::move(weights),
                                         .offload_buffers = options.offload_buffers,
                                         .preload_module_classes = options.preload_module_classes,
                                         .prefetcher = prefetcher});
  if (prefetcher) add_prefetch_boundary(model, std::move(prefetcher));
}

}  // namespace

void cpu_offload(nn::Module& model, OffloadOptions options) {
  WeightsMap state =
      options.state_dict ? options.state_dict : cpu_weights(model.state_dict({.keep_tied = true}));
  offload_every_module(model, options, std::move(state));
}

void disk_offload(nn::Module& model, const std::filesystem::path& offload_dir,
                  OffloadOptions options) {
  if (!std::filesystem::is_directory(offload_dir) ||
      !std::filesystem::exists(offload_dir / "index.json")) {
    io::offload_state_dict(offload_dir, model.state_dict({.keep_tied = true}));
  }
  offload_every_module(model, options, io::OffloadFolder::open(offload_dir));
}

void move_model(nn::Module& model, ExecutionDevice device) {
  if (has_any_hook(model)) {
    log_warning("You shouldn't move a model that is dispatched using ferry hooks.");
    for (const auto& p : model.named_parameters()) {
      if (p.tensor().is_meta()) {
        throw InvalidDeviceMap(
            "You can't move a model that has some modules offloaded to cpu or disk.",
            ErrorFields{.path = p.name});
      }
    }
  }
  move_module(model, device);
}

}  // namespace ferry::dispatch
