#pragma once
// Planted violation for the layering test: core must not include nn.
#include "ferry/nn/module.h"
