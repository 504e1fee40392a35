#pragma once
// Builds the syntax tree of a chat template from its tokens.

#include <vector>

#include "models/chat/syntax.h"

namespace ferry::models::chat {

// The template's statements. Throws CorruptFile for a syntax error and Unsupported for a
// construct outside the subset, naming the origin and line:column.
std::vector<Stmt> parse_template(const Source& source);

}  // namespace ferry::models::chat
