#pragma once
// Everything ferry offers a user, in one header:
//   Hugging Face folders     ferry::load_pretrained, Pretrained::generate (models/pretrained.h)
//   big-model inference      big_modeling.h: build on meta, plan, load and dispatch under
//                            Accelerate's names (docs/names.md)
//   models                   registry (load_model), generation, tokenizers, make_model
//   files                    safetensors, sharded checkpoints, offload folders
// Including one layer's headers instead (ferry/plan/..., linking ferry::plan) keeps a program to
// what it uses.

#include "ferry/big_modeling.h"
#include "ferry/io/checkpoint.h"
#include "ferry/io/offload_folder.h"
#include "ferry/io/safetensors.h"
#include "ferry/io/safetensors_writer.h"
#include "ferry/io/sharded.h"
#include "ferry/models/config.h"
#include "ferry/models/generate.h"
#include "ferry/models/generation_config.h"
#include "ferry/models/make_model.h"
#include "ferry/models/pretrained.h"
#include "ferry/models/registry.h"
#include "ferry/models/tokenizer.h"
#include "ferry/plan/module_sizes.h"
#include "ferry/plan/resolve.h"
