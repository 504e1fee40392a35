#pragma once
// A view of a checkpoint in which chosen Linear weights read as int8 values plus float16 scales
// (Note [int8 Linear weights] in src/nn/linear.cpp): how `--quantize int8` quantizes at load.

#include <memory>
#include <string>
#include <vector>

#include "ferry/io/tensor_source.h"

namespace ferry::models::detail {

// `source` with each weight of `weights` ("model.layers.0.mlp.up_proj.weight", float [out, in],
// in a multiple of nn::kInt8GroupSize) read as int8 [out, in], and a float16
// "<module>.weight_scale" [out, in / nn::kInt8GroupSize] added beside it. Quantized when loaded
// (never on the headers-only paths: planning reads infos only); these tensors lie in no file, so a
// disk-placed one is written, int8, to the offload folder. A weight the checkpoint stores as int8
// already is passed through with its stored weight_scale (float16, or float32 as older ferry
// wrote them). Names `source` lacks are left out
// (load_model reports them missing). Throws, from the headers alone, ShapeMismatch naming the
// tensor and its file for a weight that is not 2-D or a stored scale whose shape is not
// [out, in / kInt8GroupSize] (written with another group size) or whose dtype is neither float16
// nor float32, MissingTensor for a stored int8
// weight without its scale, DTypeMismatch for a stored weight neither floating nor int8; when
// loaded, InvalidArgument naming the tensor for a weight beyond float16 scales' range.
std::shared_ptr<const io::TensorSource> int8_view(std::shared_ptr<const io::TensorSource> source,
                                                  const std::vector<std::string>& weights);

// "<module>.weight_scale" for "<module>.weight".
std::string scale_name(const std::string& weight);

}  // namespace ferry::models::detail
