# ferry_layer(NAME SOURCES... DEPS layers...): a library target ferry_<NAME> (alias ferry::<NAME>)
# for one layer, sharing the LibTorch precompiled header.
function(ferry_layer name)
  cmake_parse_arguments(L "" "" "SOURCES;DEPS;LIBS" ${ARGN})
  add_library(ferry_${name} ${L_SOURCES})
  add_library(ferry::${name} ALIAS ferry_${name})
  target_include_directories(ferry_${name} PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
                             PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(ferry_${name} PUBLIC torch PRIVATE ferry_flags ${L_LIBS})
  foreach(dep ${L_DEPS})
    target_link_libraries(ferry_${name} PUBLIC ferry_${dep})
  endforeach()
  target_precompile_headers(ferry_${name} REUSE_FROM ferry_pch)
endfunction()

# ferry_test(NAME LAYER SOURCES... [TIMEOUT SECONDS]): one GoogleTest binary, registered with
# CTest and labelled; TIMEOUT bounds each of its tests (those that start processes).
function(ferry_test name layer)
  cmake_parse_arguments(T "" "TIMEOUT" "" ${ARGN})
  add_executable(${name} ${T_UNPARSED_ARGUMENTS})
  target_link_libraries(${name} PRIVATE ferry::ferry ferry_flags GTest::gtest GTest::gtest_main GTest::gmock)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  target_precompile_headers(${name} REUSE_FROM ferry_pch)
  set(properties LABELS ${layer})
  if(T_TIMEOUT)
    list(APPEND properties TIMEOUT ${T_TIMEOUT})
  endif()
  gtest_discover_tests(${name} PROPERTIES ${properties} DISCOVERY_TIMEOUT 60)
endfunction()
