#pragma once
// Construction contexts: build modules whose parameters land on a given device, above all on the
// meta device (init_empty_weights), so that a model of any size is built without memory.

#include <ATen/ATen.h>
#include <c10/core/Device.h>

#include <optional>

namespace ferry::nn {

// The construction context of the current thread.
struct InitContext {
  std::optional<c10::Device> device;  // where new parameters go; nullopt = where created (CPU)
  bool include_buffers = false;       // new buffers go to `device` too
};

// The context in force on this thread (no device outside any guard).
const InitContext& current_init_context() noexcept;

// Scoped guard (Accelerate's init_on_device): parameters registered on this thread while it lives
// are placed on `device`; buffers too when include_buffers is true. include_buffers defaults to
// the environment variable FERRY_INIT_INCLUDE_BUFFERS (truthy/falsy words, unset = false; any
// other value throws InvalidArgument). The previous context is restored on destruction, also
// during stack unwinding. Guards nest.
class InitOnDevice {
 public:
  explicit InitOnDevice(c10::Device device, std::optional<bool> include_buffers = std::nullopt);
  ~InitOnDevice();
  InitOnDevice(const InitOnDevice&) = delete;
  InitOnDevice& operator=(const InitOnDevice&) = delete;

 private:
  InitContext previous_;
};

// init_empty_weights: InitOnDevice on the meta device.
class InitEmptyWeights : public InitOnDevice {
 public:
  explicit InitEmptyWeights(std::optional<bool> include_buffers = std::nullopt);
};

// Resolves include_buffers: the given value, else FERRY_INIT_INCLUDE_BUFFERS, else false.
bool resolve_include_buffers(std::optional<bool> include_buffers);

// `tensor` moved to `device`; for meta only the shape and dtype are kept (nothing allocated).
at::Tensor place_on(const at::Tensor& tensor, c10::Device device);

}  // namespace ferry::nn
