// Layer 'dispatch': see ferry/dispatch/layer.h.
#include "ferry/dispatch/layer.h"

namespace ferry::dispatch {
std::string_view layer_name() { return "dispatch"; }
}  // namespace ferry::dispatch
