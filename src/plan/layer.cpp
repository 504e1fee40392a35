// Layer 'plan': see ferry/plan/layer.h.
#include "ferry/plan/layer.h"

namespace ferry::plan {
std::string_view layer_name() { return "plan"; }
}  // namespace ferry::plan
