// Note [Options defaults] (registry.h): a designated initializer that names one field of a nested
// options struct leaves every other field at the value the default object has.
#include <gtest/gtest.h>

#include "ferry/dispatch/dispatch_model.h"
#include "ferry/models/pretrained.h"
#include "ferry/models/registry.h"

namespace ferry::models {
namespace {

using dispatch::LoadAndDispatchOptions;

// Every field of LoadAndDispatchOptions but device_map (the one the tests name) and the
// callbacks (not comparable).
void expect_same_except_device_map(const LoadAndDispatchOptions& a,
                                   const LoadAndDispatchOptions& b) {
  EXPECT_EQ(a.strict, b.strict);
  EXPECT_EQ(a.max_memory.has_value(), b.max_memory.has_value());
  EXPECT_EQ(a.reserve, b.reserve);
  EXPECT_EQ(a.no_split_module_classes, b.no_split_module_classes);
  EXPECT_EQ(a.no_split_patterns, b.no_split_patterns);
  EXPECT_EQ(a.offload_folder, b.offload_folder);
  EXPECT_EQ(a.offload_buffers, b.offload_buffers);
  EXPECT_EQ(a.dtype, b.dtype);
  EXPECT_EQ(a.offload_state_dict, b.offload_state_dict);
  EXPECT_EQ(a.skip_keys, b.skip_keys);
  EXPECT_EQ(a.preload_module_classes, b.preload_module_classes);
  EXPECT_EQ(a.force_hooks, b.force_hooks);
  ASSERT_EQ(a.prefetch.has_value(), b.prefetch.has_value());
  if (a.prefetch) {
    EXPECT_EQ(a.prefetch->lookahead, b.prefetch->lookahead);
    EXPECT_EQ(a.prefetch->read_mode, b.prefetch->read_mode);
    EXPECT_EQ(a.prefetch->threads, b.prefetch->threads);
    EXPECT_EQ(a.prefetch->chunk_bytes, b.prefetch->chunk_bytes);
    EXPECT_EQ(a.prefetch->direct_min_bytes, b.prefetch->direct_min_bytes);
  }
  EXPECT_EQ(a.compute.where, b.compute.where);
  EXPECT_EQ(a.compute.max_rows, b.compute.max_rows);
  EXPECT_EQ(a.main_device, b.main_device);
  EXPECT_EQ(a.runtime.streaming, b.runtime.streaming);
  EXPECT_EQ(a.runtime.direct_io, b.runtime.direct_io);
  EXPECT_EQ(a.runtime.kv_cache_bytes, b.runtime.kv_cache_bytes);
  EXPECT_EQ(a.runtime.footprint_bytes, b.runtime.footprint_bytes);
}

void expect_same_shape(const RunShape& a, const RunShape& b) {
  EXPECT_EQ(a.batch, b.batch);
  EXPECT_EQ(a.context, b.context);
  EXPECT_EQ(a.prompt_tokens, b.prompt_tokens);
  EXPECT_EQ(a.max_new_tokens, b.max_new_tokens);
}

TEST(OptionsDefaults, NamingTheDeviceMapKeepsStrictAndEveryOtherLoadDefault) {
  const LoadModelOptions plain;
  const LoadModelOptions named{.dispatch = {.device_map = plan::Strategy::kAuto}};
  EXPECT_TRUE(std::holds_alternative<plan::Strategy>(named.dispatch.device_map));
  expect_same_except_device_map(plain.dispatch, named.dispatch);
  expect_same_shape(plain.shape, named.shape);
  // Note [Compute dtype]: float32 unless asked, whatever else is named.
  EXPECT_FALSE(named.compute_dtype.automatic);
  EXPECT_EQ(named.compute_dtype.dtype, DType::kF32);
  EXPECT_EQ(plain.compute_dtype.dtype, DType::kF32);
}

TEST(OptionsDefaults, NamingOneShapeFieldKeepsTheLoadDefaults) {
  const LoadModelOptions plain;
  const LoadModelOptions named{.shape = {.batch = 4}};
  EXPECT_EQ(named.shape.batch, 4);
  EXPECT_EQ(named.shape.prompt_tokens, plain.shape.prompt_tokens);
  EXPECT_EQ(named.shape.max_new_tokens, plain.shape.max_new_tokens);
  expect_same_except_device_map(plain.dispatch, named.dispatch);
}

TEST(OptionsDefaults, NestedPolicyStructsKeepTheirOwnDefaults) {
  const LoadAndDispatchOptions plain;
  const LoadAndDispatchOptions named{
      .compute = {.where = dispatch::ComputePolicy::Where::kWeights}};
  EXPECT_EQ(named.compute.max_rows, plain.compute.max_rows);
  const dispatch::DispatchOptions dispatch_plain;
  const dispatch::DispatchOptions dispatch_named{.compute = {.max_rows = 4}};
  EXPECT_EQ(dispatch_named.compute.where, dispatch_plain.compute.where);
  EXPECT_EQ(dispatch_named.prefetch.has_value(), dispatch_plain.prefetch.has_value());
}

TEST(OptionsDefaults, PretrainedOptionsFieldsAreIndependent) {
  const PretrainedOptions plain;
  const PretrainedOptions named{.max_memory = "cpu=8GiB"};
  EXPECT_EQ(named.device_map, plain.device_map);
  EXPECT_EQ(named.context, plain.context);
  EXPECT_EQ(named.max_new_tokens, plain.max_new_tokens);
  EXPECT_EQ(named.dtype, plain.dtype);
}

}  // namespace
}  // namespace ferry::models
