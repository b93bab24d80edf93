# Cross-compiling for AArch64 Linux with Debian's g++-aarch64-linux-gnu; programs (GoogleTest's
# test discovery, ctest) run under qemu-aarch64-static with QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
# (scripts/test-aarch64.sh sets it). Header-only dependencies (Eigen, xsimd) are the host's
# /usr/include copies: they are architecture-independent.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64-static)
# Libraries only from the target's tree (and the prefixes passed in CMAKE_PREFIX_PATH);
# CMake package files and headers from the host too (Eigen's and xsimd's are arch-independent).
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
