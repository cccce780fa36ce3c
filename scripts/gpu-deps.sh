# Sourced by the GPU-machine scripts (scripts/gpu-check.sh, tests/python/gpu_check.sh): where the
# Debian dev packages svdquant builds against are missing (the lent GPU machines), unpacks the
# .debs in $ROOT/.deps (fetched beforehand by scripts/fetch-gpu-deps.sh) with
# dpkg -x into a prefix under /tmp, never into /, and points pkg-config, CMake and the loader at
# it. Appends the CMake arguments it needs to the array EXTRA, and defines gpu_configure. Needs ROOT.
EXTRA=()
if [ -d "$ROOT/.deps" ] && [ ! -f /usr/include/nlohmann/json.hpp ]; then
  DEPS=/tmp/svdquant-deps
  L=$DEPS/usr/lib/x86_64-linux-gnu
  if [ ! -d "$L" ]; then
    mkdir -p "$DEPS"
    for f in "$ROOT"/.deps/*.deb; do dpkg -x "$f" "$DEPS"; done
    # Debian's BLAS/LAPACK alternatives (update-alternatives does not run under dpkg -x).
    for lib in libblas.so.3 liblapack.so.3 libblas.so liblapack.so; do ln -sf "openblas-pthread/$lib" "$L/$lib"; done
    mkdir -p "$L/pkgconfig"
    ln -sf ../openblas-pthread/pkgconfig/lapack-openblas.pc "$L/pkgconfig/lapack.pc"
    ln -sf ../openblas-pthread/pkgconfig/blas-openblas.pc "$L/pkgconfig/blas.pc"
  fi
  export PKG_CONFIG_SYSROOT_DIR=$DEPS
  export PKG_CONFIG_LIBDIR=$L/pkgconfig:$DEPS/usr/share/pkgconfig
  export LD_LIBRARY_PATH=$L:$L/openblas-pthread:${LD_LIBRARY_PATH:-}
  export CMAKE_PREFIX_PATH=$DEPS/usr
  EXTRA+=("-DPKG_CONFIG_EXECUTABLE=$DEPS/usr/bin/pkgconf")
fi

# The CUDA build of the GPU checks (scripts/gpu-check.sh, scripts/gpu-ab.sh): tests and benchmarks
# on, Python off. gpu_configure SOURCE_DIR BUILD_DIR [more CMake arguments]
gpu_configure() {
  cmake -S "$1" -B "$2" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSVDQUANT_BUILD_TESTS=ON -DSVDQUANT_BUILD_BENCH=ON \
    -DSVDQUANT_BUILD_PYTHON=OFF "${EXTRA[@]}" "${@:3}"
}
