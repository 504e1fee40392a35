// Layer 'io': see ferry/io/layer.h.
#include "ferry/io/layer.h"

namespace ferry::io {
std::string_view layer_name() { return "io"; }
}  // namespace ferry::io
