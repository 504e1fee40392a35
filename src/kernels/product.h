#pragma once
// Private to the kernels layer: what linear() and the int8 linear() share — input checks, x
// flattened to float32 rows, the decode and the tiled prefill products, and the finishing step
// (bias, shape, dtype).

#include <ATen/ATen.h>

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/kernels/quantized.h"
#include "gemv.h"

namespace ferry::kernels::detail {

// "float32", "bfloat16", ...; LibTorch's name for types ferry has no DType for.
std::string dtype_name(at::ScalarType t);

// x is [..., k] in float32, bfloat16 or float16 (ShapeMismatch / DTypeMismatch naming `what`);
// `weight_shape` is printed in the message.
void check_input(const at::Tensor& x, std::int64_t k, at::IntArrayRef weight_shape,
                 std::string_view what);
// bias is none, or [n] in float32, bfloat16 or float16.
void check_bias(const std::optional<at::Tensor>& bias, std::int64_t n, std::string_view what);

// An int8 weight's values and scales agree (DTypeMismatch / ShapeMismatch naming `what`).
void check_quantized(const QuantizedWeight& w, std::string_view what);

// x as contiguous float32 rows [m, k] (a view when it already is).
at::Tensor rows_f32(const at::Tensor& x);

// y [m, n] float32 = x_rows · wᵀ by a gemv variant; `args` has the weight's fields set.
at::Tensor decode_product(const at::Tensor& x_rows, GemvArgs args, std::int64_t n, Isa isa);

// The decode product read straight from x's memory when x is contiguous float32 with at most
// kDecodeMaxRows rows of k, a multiple of kPadFloats: y = x · wᵀ (+ bias) in x's shape, without
// the reshape, cast, padding and final reshape of the general path (a LibTorch dispatch each,
// ~5 per product, on the thread the others wait for). nullopt when x does not qualify.
std::optional<at::Tensor> direct_decode(const at::Tensor& x, GemvArgs args, std::int64_t n, Isa isa,
                                        const std::optional<at::Tensor>& bias);
// The same for several weights read with one x (Note [Grouped products]): args[i] has weight
// i's fields set, n[i] its rows, biases[i] its bias; one gemv_group for all of them.
std::optional<std::vector<at::Tensor>> direct_decode(
    const at::Tensor& x, std::span<GemvArgs> args, std::span<const std::int64_t> n, Isa isa,
    std::span<const std::optional<at::Tensor>> biases);

// The gemv fields of a weight: a float one in `format`, or an int8 one (values and scales).
GemvArgs weight_args(const at::Tensor& w, WeightFormat format);
GemvArgs weight_args(const QuantizedWeight& w);

// Writes weight rows [n0, n0 + tile.size(0)) as float32 into `tile` ([rows, k]).
using FillTile = std::function<void(std::int64_t n0, at::Tensor& tile)>;
// y [m, n] float32 = x_rows · wᵀ by BLAS, one float32 tile of the weight at a time (bounded
// scratch: never a float32 copy of the whole weight).
at::Tensor tiled_product(const at::Tensor& x_rows, std::int64_t n, const FillTile& fill);

// y [m, n] float32 → + bias, x's leading dims, x's dtype.
at::Tensor finish(at::Tensor y, const at::Tensor& x, const std::optional<at::Tensor>& bias);

}  // namespace ferry::kernels::detail
