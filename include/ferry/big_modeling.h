#pragma once
// ferry's big-model entry points under Accelerate's names, in one header:
//   build without memory     nn::InitEmptyWeights / nn::InitOnDevice
//   plan                     plan::infer_auto_device_map, plan::get_balanced_memory,
//                            plan::get_max_memory, plan::check_device_map
//   load and run             dispatch::load_checkpoint_and_dispatch,
//                            dispatch::load_checkpoint_in_model, dispatch::dispatch_model,
//                            dispatch::cpu_offload, dispatch::cpu_offload_with_hook,
//                            dispatch::disk_offload
//   hooks                    dispatch::add_hook_to_module, dispatch::remove_hook_from_module,
//                            dispatch::AlignDevicesHook, dispatch::SequentialHook
// docs/names.md maps every Accelerate name to its ferry counterpart.

#include "ferry/core/bytes.h"
#include "ferry/core/devices.h"
#include "ferry/core/error.h"
#include "ferry/core/placement.h"
#include "ferry/dispatch/align_devices.h"
#include "ferry/dispatch/cpu_offload_hook.h"
#include "ferry/dispatch/dispatch_model.h"
#include "ferry/dispatch/hooks.h"
#include "ferry/dispatch/load_checkpoint.h"
#include "ferry/dispatch/weights_map.h"
#include "ferry/nn/containers.h"
#include "ferry/nn/init.h"
#include "ferry/nn/module.h"
#include "ferry/nn/tied.h"
#include "ferry/plan/auto_device_map.h"
#include "ferry/plan/balanced_memory.h"
#include "ferry/plan/device_map.h"
#include "ferry/plan/memory_budget.h"
#include "ferry/plan/strategy.h"
