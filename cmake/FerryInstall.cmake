# `cmake --install` puts headers, the layer libraries, the ferry binary and a ferryConfig.cmake
# (find_package(ferry) → ferry::ferry and ferry::<layer>) under CMAKE_INSTALL_PREFIX.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(_ferry_layers ferry_base ferry_core ferry_io ferry_kernels ferry_nn ferry_plan ferry_dispatch ferry_models ferry_engine ferry_serve)
foreach(t ${_ferry_layers})
  target_include_directories(${t} PUBLIC $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  string(REPLACE "ferry_" "" _short ${t})
  set_target_properties(${t} PROPERTIES EXPORT_NAME ${_short})
endforeach()
set_target_properties(ferry_ferry PROPERTIES EXPORT_NAME ferry)

install(TARGETS ${_ferry_layers} ferry_ferry ferry_flags EXPORT ferryTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS ferry_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS ferry_cli_engine RUNTIME DESTINATION ${CMAKE_INSTALL_LIBEXECDIR}/ferry)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/ferry DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT ferryTargets NAMESPACE ferry:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ferry)

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/ferryConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/ferryConfig.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ferry)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/ferryConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/ferryConfig.cmake ${PROJECT_BINARY_DIR}/ferryConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ferry)
