# GGUF interop with a real llama.cpp (ctest label "interop").
#
# The peer is npm's node-llama-cpp, pinned by tests/interop/package.json + package-lock.json and
# installed with `(cd tests/interop && npm ci --ignore-scripts --omit=optional)` (no postinstall
# build, no GPU variants: ~80 MB). It ships prebuilt llama.cpp shared libraries for linux-x64 and
# the matching llama.cpp source as a git bundle. At configure time the public headers (llama.h,
# ggml*.h) are checked out of that bundle into the build tree — never into the source tree — and
# tests/interop/llama_peer.cpp is built against them and linked with the prebuilt libraries.
# tests/interop_test.cpp drives it. bench/llama_gen_peer.cpp, the peer of `scripts/bench generate`,
# is built the same way here (its "prebuilt" column); its main build, against llama.cpp compiled
# from the same bundle with -march=native, is not part of this project's configure: only
# `scripts/bench generate` pays for it (bench/build_llama_native, into build/llama.cpp-native).
set(DISTILL_INTEROP_NODE_MODULES "${CMAKE_SOURCE_DIR}/tests/interop/node_modules")
set(_interop_bundle "${DISTILL_INTEROP_NODE_MODULES}/node-llama-cpp/llama/gitRelease.bundle")
set(_interop_bins "${DISTILL_INTEROP_NODE_MODULES}/@node-llama-cpp/linux-x64/bins/linux-x64")
# AUTO (the default) decides at every configure, and the configure re-runs when tests/interop
# changes (npm ci creates node_modules there), so a build directory configured before the npm
# install picks the peer up without being deleted.
set(DISTILL_INTEROP AUTO CACHE STRING
    "Build the llama.cpp peer and the GGUF interop test: ON, OFF, or AUTO (ON when \
tests/interop/node_modules holds node-llama-cpp: cd tests/interop && npm ci --ignore-scripts --omit=optional)")
set_property(CACHE DISTILL_INTEROP PROPERTY STRINGS AUTO ON OFF)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${CMAKE_SOURCE_DIR}/tests/interop")
if(DISTILL_INTEROP STREQUAL "AUTO")
  if(EXISTS "${_interop_bundle}" AND EXISTS "${_interop_bins}")
    set(_interop_on ON)
  else()
    set(_interop_on OFF)
    message(STATUS "GGUF interop: off (no tests/interop/node_modules; see cmake/interop.cmake)")
  endif()
elseif(DISTILL_INTEROP)
  set(_interop_on ON)
else()
  set(_interop_on OFF)
endif()

if(_interop_on)
  if(NOT EXISTS "${_interop_bundle}" OR NOT EXISTS "${_interop_bins}")
    message(FATAL_ERROR "DISTILL_INTEROP=ON but node-llama-cpp is not installed: run "
                        "(cd tests/interop && npm ci --ignore-scripts --omit=optional)")
  endif()
  find_package(Git REQUIRED)
  # Headers from the bundle, re-extracted when the bundle changes.
  set(_interop_src "${CMAKE_BINARY_DIR}/llama.cpp-headers")
  file(SHA256 "${_interop_bundle}" _interop_hash)
  if(NOT EXISTS "${_interop_src}/${_interop_hash}.stamp")
    file(REMOVE_RECURSE "${_interop_src}")
    execute_process(
      COMMAND "${GIT_EXECUTABLE}" clone --quiet --no-checkout "${_interop_bundle}" "${_interop_src}"
      RESULT_VARIABLE _rc ERROR_VARIABLE _err)
    if(NOT _rc EQUAL 0)
      message(FATAL_ERROR "cannot clone ${_interop_bundle}: ${_err}")
    endif()
    execute_process(
      COMMAND "${GIT_EXECUTABLE}" -C "${_interop_src}" -c advice.detachedHead=false
              checkout --quiet HEAD -- include ggml/include
      RESULT_VARIABLE _rc ERROR_VARIABLE _err)
    if(NOT _rc EQUAL 0)
      message(FATAL_ERROR "cannot check out llama.cpp headers from the bundle: ${_err}")
    endif()
    file(TOUCH "${_interop_src}/${_interop_hash}.stamp")
  endif()
  file(GLOB _interop_llama "${_interop_bins}/libllama.*so")
  file(GLOB _interop_ggml "${_interop_bins}/libggml.*so")
  set(_interop_ggml_base "${_interop_bins}/libggml-base.so")
  if(NOT _interop_llama OR NOT _interop_ggml OR NOT EXISTS "${_interop_ggml_base}")
    message(FATAL_ERROR "prebuilt llama.cpp libraries not found in ${_interop_bins}")
  endif()

  # A program against llama.cpp's C API: the bundle's headers, the prebuilt libraries.
  function(distill_llama_cpp_program name source)
    add_executable(${name} ${source})
    target_include_directories(${name} SYSTEM PRIVATE "${_interop_src}/include"
                               "${_interop_src}/ggml/include")
    target_link_libraries(${name} PRIVATE ${_interop_llama} ${_interop_ggml}
                          "${_interop_ggml_base}")
    target_compile_definitions(${name} PRIVATE LLAMA_PEER_BACKEND_DIR="${_interop_bins}")
    set_target_properties(${name} PROPERTIES BUILD_RPATH "${_interop_bins}")
  endfunction()
  distill_llama_cpp_program(llama_peer tests/interop/llama_peer.cpp)
  # The generation benchmark's peer (scripts/bench generate).
  distill_llama_cpp_program(llama_gen_peer bench/llama_gen_peer.cpp)
  message(STATUS "GGUF interop: llama.cpp peer from ${_interop_bins}")
endif()

if(TARGET interop_test)
  if(_interop_on)
    target_compile_definitions(interop_test PRIVATE
        DISTILL_LLAMA_PEER="$<TARGET_FILE:llama_peer>")
    add_dependencies(interop_test llama_peer distill)
  endif()
  set_tests_properties(interop_test PROPERTIES LABELS interop)
endif()
