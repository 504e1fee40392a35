#include "models/int8_source.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <set>

#include "ferry/core/dtype.h"
#include "ferry/core/error.h"
#include "ferry/core/shape.h"
#include "ferry/kernels/quantized.h"
#include "ferry/nn/linear.h"

namespace ferry::models::detail {
namespace {

class Int8Source final : public io::TensorSource {
 public:
  Int8Source(std::shared_ptr<const io::TensorSource> parent, const std::vector<std::string>& weights)
      : parent_(std::move(parent)) {
    for (const std::string& weight : weights) add(weight);
    names_ = parent_->names();
    for (const auto& [scale, weight] : scale_of_) {
      if (!parent_->contains(scale)) names_.push_back(scale);
    }
    std::sort(names_.begin(), names_.end());
  }

  const std::vector<std::string>& names() const override { return names_; }

  std::optional<TensorInfo> find(std::string_view name) const override {
    if (auto it = infos_.find(name); it != infos_.end()) return it->second;
    return parent_->find(name);
  }

  at::Tensor load(std::string_view name, const io::LoadOptions& options) const override {
    const auto weight = computed_weight_of(name);
    if (!weight) return parent_->load(name, options);
    at::Tensor t;
    {
      std::lock_guard lock(mutex_);
      if (cached_name_ != *weight) {
        // One weight at a time: its scale is listed right after it (names are sorted), so each
        // weight is quantized once.
        // Read into a buffer of its own (pread), not a view of the mapping: a view would leave
        // the float weight's pages in the process's resident set, charged to the CPU budget
        // although only the int8 copy is kept.
        try {
          cached_ = kernels::quantize(parent_->load(*weight, {.copy = true}),
                                      kernels::QuantScheme::kGroup32);
        } catch (const InvalidArgument& e) {  // a weight too large for float16 scales
          const std::string file = parent_->file_of(*weight).string();
          throw InvalidArgument(
              fmt::format("tensor '{}' in {}: {}", *weight, file, e.what()),
              ErrorFields{
                  .path = *weight, .file = file, .expected = e.expected(), .actual = e.actual()});
        }
        cached_name_ = *weight;
      }
      t = name == *weight ? cached_.values : cached_.scales;
    }
    if (options.dtype) t = t.to(require_scalar_type(*options.dtype));
    return t.to(options.device);
  }

  std::filesystem::path file_of(std::string_view name) const override {
    // Quantized here, read from no file: the loader converts a disk-placed one into the offload
    // folder instead of reading it in place.
    if (computed_weight_of(name)) return {};
    return parent_->file_of(name);
  }

  std::string description() const override { return parent_->description(); }

  std::optional<io::FileExtent> extent(std::string_view name) const override {
    if (computed_weight_of(name)) return std::nullopt;
    return parent_->extent(name);
  }

 private:
  void add(const std::string& weight) {
    const std::optional<TensorInfo> stored = parent_->find(weight);
    if (!stored) return;  // missing: reported by load_model
    const std::string file = parent_->file_of(weight).string();
    FERRY_CHECK(stored->shape.size() == 2 && stored->shape[1] % nn::kInt8GroupSize == 0,
                ShapeMismatch,
                "tensor '{}' in {}: expected a 2-D weight [out, in] with in divisible by {} to "
                "quantize to int8, got shape {}",
                weight, file, nn::kInt8GroupSize, shape_string(stored->shape));
    const std::int64_t out = stored->shape[0];
    const std::int64_t in = stored->shape[1];
    const std::vector<std::int64_t> scale_shape{out, in / nn::kInt8GroupSize};
    const std::string scale = scale_name(weight);
    if (stored->dtype == DType::kI8) {
      // Quantized already (an int8 offload folder, a saved int8 model): the scale's shape is the
      // record of the group size it was written with.
      const std::optional<TensorInfo> stored_scale = parent_->find(scale);
      if (!stored_scale) {
        throw MissingTensor(fmt::format("tensor '{}' in {} is int8 but {} has no '{}' (its scales)",
                                        weight, file, parent_->description(), scale),
                            ErrorFields{.path = scale, .file = parent_->description()});
      }
      if (stored_scale->shape != scale_shape ||
          (stored_scale->dtype != DType::kF16 && stored_scale->dtype != DType::kF32)) {
        const std::string scale_file = parent_->file_of(scale).string();
        const bool grouped = stored_scale->shape.size() == 2 && stored_scale->shape[1] > 0 &&
                             in % stored_scale->shape[1] == 0;
        throw ShapeMismatch(
            fmt::format(
                "tensor '{}' in {}: expected float16 or float32 shape {} (int8 weight {} in "
                "groups of {} inputs), got {} {}{}: written with another group size or scheme, "
                "refused rather than misread",
                scale, scale_file, shape_string(scale_shape), shape_string(stored->shape),
                nn::kInt8GroupSize, safetensors_name(stored_scale->dtype),
                shape_string(stored_scale->shape),
                grouped ? fmt::format(" (groups of {})", in / stored_scale->shape[1]) : ""),
            ErrorFields{.path = scale,
                        .file = scale_file,
                        .expected = shape_string(scale_shape),
                        .actual = shape_string(stored_scale->shape)});
      }
      return;  // passed through as stored
    }
    FERRY_CHECK(is_floating(stored->dtype), DTypeMismatch,
                "tensor '{}' in {}: expected a floating weight to quantize to int8, got {}",
                weight, file, safetensors_name(stored->dtype));
    infos_[weight] = TensorInfo{.name = weight, .dtype = DType::kI8, .shape = stored->shape};
    infos_[scale] = TensorInfo{.name = scale, .dtype = DType::kF16, .shape = scale_shape};
    scale_of_[scale] = weight;
    computed_.insert(weight);
  }

  // The weight `name` is quantized from (itself or its scale's weight), or nullopt.
  std::optional<std::string> computed_weight_of(std::string_view name) const {
    if (auto it = computed_.find(name); it != computed_.end()) return *it;
    if (auto it = scale_of_.find(name); it != scale_of_.end()) return it->second;
    return std::nullopt;
  }

  std::shared_ptr<const io::TensorSource> parent_;
  std::vector<std::string> names_;
  std::map<std::string, TensorInfo, std::less<>> infos_;        // the quantized weights and scales
  std::map<std::string, std::string, std::less<>> scale_of_;    // scale name → its weight
  std::set<std::string, std::less<>> computed_;                 // weights quantized here
  mutable std::mutex mutex_;
  mutable std::string cached_name_;
  mutable kernels::QuantizedWeight cached_;
};

}  // namespace

std::string scale_name(const std::string& weight) {
  constexpr std::string_view kWeight = "weight";
  FERRY_ASSERT(weight.ends_with(kWeight), "{} is not a weight", weight);
  return weight + "_scale";
}

std::shared_ptr<const io::TensorSource> int8_view(std::shared_ptr<const io::TensorSource> source,
                                                  const std::vector<std::string>& weights) {
  return std::make_shared<Int8Source>(std::move(source), weights);
}

}  // namespace ferry::models::detail
