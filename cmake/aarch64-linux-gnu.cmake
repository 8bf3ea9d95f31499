# Cross-builds the runtime (bitloom-run) for arm64 Linux with Debian's
# g++-aarch64-linux-gnu; run it under qemu-user:
#   cmake -G Ninja -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
#     -DBITLOOM_ENABLE_COMPILER=OFF -DBITLOOM_ENABLE_TESTS=OFF
#   qemu-aarch64 -L /usr/aarch64-linux-gnu build-arm64/tools/bitloom-run/bitloom-run ...
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
# Header-only dependencies (nlohmann-json, CLI11, FlatBuffers) come from the
# host's architecture-independent /usr/include.
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
