# Cross-compiles for 64-bit ARM Linux (Raspberry Pi 4/5 class) with Debian's
# cross toolchain, and runs what CMake and ctest execute under qemu-user:
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=deploy/aarch64-toolchain.cmake -DMC_ENGINE_ONLY=ON
# Packages: deploy/setup.sh --aarch64. The emulated CPU is qemu's default
# ("max", with the dot-product extension) unless QEMU_CPU says otherwise.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)

# Programs run with the multiarch arm64 loader and libraries (libc6:arm64,
# libcmocka0:arm64, ... under /lib and /usr/lib/aarch64-linux-gnu), not with
# "-L /usr/aarch64-linux-gnu": that loader comes from libc6-arm64-cross, whose
# glibc build differs from libc6:arm64's, and the mix hangs in pthread_create.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64)

# pkg-config must read the arm64 .pc files, never the host's.
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig)
set(ENV{PKG_CONFIG_PATH} "")
