# Helpers shared by every module's CMakeLists.txt.

# Warnings and sanitizers for project code only (never for generated protobuf sources).
function(parley_target_options target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wshadow -Wnon-virtual-dtor
                                           -Wold-style-cast -Wcast-align -Wunused
                                           -Woverloaded-virtual -Wimplicit-fallthrough)
  if(PARLEY_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
    # GCC 12 at -O3 reports false positives of these inside libstdc++ (GCC bugs 105329, 105651):
    # still printed, but they do not fail a Release build.
    target_compile_options(${target} PRIVATE
      $<$<AND:$<CXX_COMPILER_ID:GNU>,$<CONFIG:Release>>:-Wno-error=restrict;-Wno-error=stringop-overread;-Wno-error=array-bounds;-Wno-error=stringop-overflow>)
  endif()
  if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    target_compile_options(${target} PRIVATE -Wthread-safety)
  endif()
endfunction()

# Fuzz mode (clang only): every library is instrumented for coverage and sanitizers; the fuzz
# targets themselves link libFuzzer's main (fuzz/CMakeLists.txt).
if(PARLEY_BUILD_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "PARLEY_BUILD_FUZZ needs clang (e.g. -DCMAKE_CXX_COMPILER=clang++-14)")
  endif()
  # Without UBSan's -fsanitize=function: clang 14 copies its prologue (the function's type
  # info as an offset from the function) from a coroutine into its .resume/.destroy clones,
  # which sit in .text while a template coroutine (Asio's use_awaitable initiation) sits in its
  # COMDAT section, and the assembler cannot encode the difference ("Cannot represent a
  # difference across sections", LLVM issue 49689).
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
                      -fno-sanitize=function -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
  enable_testing()
endif()

if(PARLEY_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

# ThreadSanitizer: parleyd runs io threads, a store thread and a checkpoint thread that hand
# each other work; this build checks the hand-offs. Only our code and what is compiled with it
# (Asio, Beast, protobuf's generated code) is instrumented, not OpenSSL, SQLite or libstdc++.
if(PARLEY_TSAN)
  if(PARLEY_SANITIZE OR PARLEY_BUILD_FUZZ)
    message(FATAL_ERROR "PARLEY_TSAN cannot be combined with PARLEY_SANITIZE or PARLEY_BUILD_FUZZ")
  endif()
  # GCC warns that TSan does not model std::atomic_thread_fence, which Asio's handler
  # invocations use. Asio's scheduler hands work over under mutexes, which TSan does see.
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer
                      $<$<CXX_COMPILER_ID:GNU>:-Wno-tsan>)
  add_link_options(-fsanitize=thread)
endif()

# parley_library(NAME SOURCES ... [PUBLIC_DEPS ...] [PRIVATE_DEPS ...])
# One library per src/ module: its dependency lists are the layering rule.
function(parley_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;PUBLIC_DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(${name} PUBLIC ${ARG_PUBLIC_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  parley_target_options(${name})
endfunction()

# parley_test(NAME SOURCES ... DEPS ...): a GoogleTest binary registered with CTest.
function(parley_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;LABELS" ${ARGN})
  if(NOT PARLEY_BUILD_TESTS)
    return()
  endif()
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main GTest::gmock)
  parley_target_options(${name})
  add_test(NAME ${name} COMMAND ${name})
  if(ARG_LABELS)
    set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}")
  endif()
endfunction()
