// Layer 'models': see ferry/models/layer.h.
#include "ferry/models/layer.h"

namespace ferry::models {
std::string_view layer_name() { return "models"; }
}  // namespace ferry::models
