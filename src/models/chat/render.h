#pragma once
// Runs a parsed chat template.

#include <memory>
#include <string>
#include <vector>

#include "models/chat/syntax.h"

namespace ferry::models::chat {

// The text `program` renders with the template variables `variables` (a JSON object, nested at
// most kMaxValueDepth deep). Throws InvalidArgument naming the origin and line:column of the
// failing statement or expression.
std::string render_template(const Source& source, const std::vector<Stmt>& program,
                            const std::shared_ptr<const Json>& variables);

}  // namespace ferry::models::chat
