cmake_policy(SET CMP0057 NEW)
# Layering rule of DESIGN.md: a layer may include only the headers of the layers below it.
# Checked at configure time over include/ and src/, so an upward include fails the build.
set(FERRY_LAYER_DEPS_core "core")
set(FERRY_LAYER_DEPS_io "core;io")
set(FERRY_LAYER_DEPS_kernels "core;kernels")
set(FERRY_LAYER_DEPS_nn "core;kernels;nn")
set(FERRY_LAYER_DEPS_plan "core;io;kernels;nn;plan")
set(FERRY_LAYER_DEPS_dispatch "core;io;kernels;nn;plan;dispatch")
set(FERRY_LAYER_DEPS_models "core;io;kernels;nn;plan;dispatch;models")

# Returns in OUT_VAR the list of "file: ferry/<layer>/..." violations under ROOT.
function(ferry_layering_violations root out_var)
  set(violations "")
  foreach(layer core io kernels nn plan dispatch models)
    file(GLOB_RECURSE files "${root}/include/ferry/${layer}/*.h" "${root}/src/${layer}/*.cpp"
         "${root}/src/${layer}/*.h")
    foreach(f ${files})
      file(STRINGS "${f}" lines REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"]ferry/")
      foreach(line ${lines})
        string(REGEX MATCH "ferry/([a-z_]+)/" _ "${line}")
        set(used "${CMAKE_MATCH_1}")
        if(used AND NOT used IN_LIST FERRY_LAYER_DEPS_${layer})
          file(RELATIVE_PATH rel "${root}" "${f}")
          list(APPEND violations "${rel} (layer ${layer}) includes ferry/${used}/")
        endif()
      endforeach()
    endforeach()
  endforeach()
  set(${out_var} "${violations}" PARENT_SCOPE)
endfunction()

function(ferry_check_layering root)
  ferry_layering_violations("${root}" violations)
  if(violations)
    string(REPLACE ";" "\n  " text "${violations}")
    message(FATAL_ERROR "ferry: upward include(s) break the layering of DESIGN.md:\n  ${text}")
  endif()
endfunction()

# Script mode: cmake -DFERRY_ROOT=... -P FerryLayering.cmake (used by a test on a planted tree).
if(CMAKE_SCRIPT_MODE_FILE AND FERRY_ROOT)
  ferry_check_layering("${FERRY_ROOT}")
endif()
