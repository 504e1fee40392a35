#include "ferry/core/dtype.h"

#include <gtest/gtest.h>

#include "ferry/core/error.h"

namespace ferry {
namespace {

TEST(DType, ElementBitsOfEverySafetensorsDType) {
  const std::vector<std::pair<DType, int>> expected{
      {DType::kF64, 64}, {DType::kF32, 32}, {DType::kF16, 16},    {DType::kBF16, 16},
      {DType::kI64, 64}, {DType::kI32, 32}, {DType::kI16, 16},    {DType::kI8, 8},
      {DType::kU8, 8},   {DType::kBool, 8}, {DType::kF8_E4M3, 8}, {DType::kF8_E5M2, 8},
      {DType::kU16, 16}, {DType::kU32, 32}, {DType::kU64, 64}};
  for (auto [d, bits] : expected) {
    EXPECT_EQ(element_bits(d), bits) << safetensors_name(d);
    EXPECT_EQ(element_size(d) * 8, bits) << safetensors_name(d);
  }
  EXPECT_EQ(all_dtypes().size(), expected.size());
}

TEST(DType, AccountingBitsFollowAccelerate) {
  EXPECT_EQ(accounting_bits(DType::kBool), 1);  // dtype_byte_size(bool) = 1/8
  EXPECT_EQ(accounting_bits(DType::kF8_E4M3), 8);
  EXPECT_EQ(accounting_bits(DType::kBF16), 16);
  EXPECT_EQ(accounting_bits(DType::kI64), 64);
}

TEST(DType, SafetensorsNamesRoundTrip) {
  for (DType d : all_dtypes()) {
    EXPECT_EQ(dtype_from_safetensors(safetensors_name(d)), d);
    EXPECT_EQ(parse_dtype(safetensors_name(d)), d);
    EXPECT_EQ(parse_dtype(torch_name(d)), d);
    EXPECT_EQ(parse_dtype("torch." + std::string(torch_name(d))), d);
  }
  EXPECT_EQ(dtype_from_safetensors("f32"), std::nullopt);  // codes are case-sensitive
  EXPECT_EQ(dtype_from_safetensors("F4"), std::nullopt);
}

TEST(DType, Aliases) {
  EXPECT_EQ(parse_dtype("fp16"), DType::kF16);
  EXPECT_EQ(parse_dtype("bf16"), DType::kBF16);
  EXPECT_EQ(parse_dtype("half"), DType::kF16);
  EXPECT_EQ(parse_dtype("FLOAT32"), DType::kF32);
  EXPECT_EQ(parse_dtype("float8_e4m3fn"), DType::kF8_E4M3);
}

TEST(DType, UnknownNameIsTypedError) {
  try {
    parse_dtype("float12");
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("unknown dtype 'float12'"), std::string::npos);
    EXPECT_EQ(e.actual(), "float12");
  }
}

TEST(DType, FloatingAndIntegral) {
  EXPECT_TRUE(is_floating(DType::kBF16));
  EXPECT_TRUE(is_floating(DType::kF8_E5M2));
  EXPECT_FALSE(is_floating(DType::kBool));
  EXPECT_TRUE(is_integral_or_bool(DType::kU8));
  EXPECT_TRUE(is_integral_or_bool(DType::kBool));
}

TEST(DType, ScalarTypesRoundTripWhereLibTorchHasThem) {
  const std::vector<std::pair<DType, c10::ScalarType>> mapped{
      {DType::kF64, c10::kDouble},    {DType::kF32, c10::kFloat}, {DType::kF16, c10::kHalf},
      {DType::kBF16, c10::kBFloat16}, {DType::kI64, c10::kLong},  {DType::kI32, c10::kInt},
      {DType::kI16, c10::kShort},     {DType::kI8, c10::kChar},   {DType::kU8, c10::kByte},
      {DType::kBool, c10::kBool}};
  for (auto [d, t] : mapped) {
    EXPECT_EQ(to_scalar_type(d), t);
    EXPECT_EQ(from_scalar_type(t), d);
    // The LibTorch element size agrees with ours.
    EXPECT_EQ(c10::elementSize(t) * 8, static_cast<std::size_t>(element_bits(d)));
  }
  EXPECT_EQ(to_scalar_type(DType::kU32), std::nullopt);
  EXPECT_THROW(require_scalar_type(DType::kU64), Unsupported);
  EXPECT_THROW(from_scalar_type(c10::kComplexFloat), Unsupported);
}

}  // namespace
}  // namespace ferry
