# libFuzzer target for the safetensors reader. Included from fuzz/CMakeLists.txt with
#   include(${CMAKE_CURRENT_LIST_DIR}/safetensors.cmake)
# (needs clang). The reader's sources are compiled into the target so that they carry the
# coverage instrumentation. Run: build-fuzz/fuzz/safetensors_fuzz -max_len=4096 fuzz/seeds/safetensors
set(IS_ST_FUZZ_DIR ${CMAKE_CURRENT_LIST_DIR})
set(IS_ST_SRC ${IS_ST_FUZZ_DIR}/../src)
if(NOT DEFINED IS_FUZZ_FLAGS)
  set(IS_FUZZ_FLAGS -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
                    -fno-omit-frame-pointer -g)
endif()
add_executable(safetensors_fuzz
  ${IS_ST_FUZZ_DIR}/safetensors_fuzz.cpp
  ${IS_ST_SRC}/io/safetensors.cpp
  ${IS_ST_SRC}/io/mapped_file.cpp
  ${IS_ST_SRC}/core/dtype.cpp
  ${IS_ST_SRC}/core/cpu_features.cpp)
target_include_directories(safetensors_fuzz PRIVATE ${IS_ST_SRC})
target_link_libraries(safetensors_fuzz PRIVATE nlohmann_json::nlohmann_json)
target_compile_options(safetensors_fuzz PRIVATE ${IS_FUZZ_FLAGS})
target_link_options(safetensors_fuzz PRIVATE ${IS_FUZZ_FLAGS})
