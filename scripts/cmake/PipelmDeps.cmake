# Dependency discovery for pipelm. Each optional backend is AUTO|ON|OFF:
# ON with the dependency missing stops the configure step naming the Debian package or path.
find_package(Threads REQUIRED)

# ---- cereal (header-only) ------------------------------------------------------------
find_path(CEREAL_INCLUDE_DIR cereal/cereal.hpp)
if(NOT CEREAL_INCLUDE_DIR)
  message(FATAL_ERROR "cereal not found: install the Debian package libcereal-dev (scripts/setup.sh does it)")
endif()
# ---- standalone Asio (header-only) ---------------------------------------------------
find_path(ASIO_INCLUDE_DIR asio.hpp)
if(NOT ASIO_INCLUDE_DIR)
  message(FATAL_ERROR "standalone Asio not found: install the Debian package libasio-dev (scripts/setup.sh does it)")
endif()

function(pipelm_check_option name)
  if(NOT ${name} MATCHES "^(AUTO|ON|OFF)$")
    message(FATAL_ERROR "${name} must be AUTO, ON or OFF (got '${${name}}')")
  endif()
endfunction()
pipelm_check_option(PIPELM_WITH_CUDA)
pipelm_check_option(PIPELM_WITH_MPI)

# ---- MPI -----------------------------------------------------------------------------
set(PIPELM_HAVE_MPI 0)
if(NOT PIPELM_WITH_MPI STREQUAL "OFF")
  find_package(MPI COMPONENTS CXX QUIET)
  if(MPI_CXX_FOUND)
    set(PIPELM_HAVE_MPI 1)
  elseif(PIPELM_WITH_MPI STREQUAL "ON")
    message(FATAL_ERROR "PIPELM_WITH_MPI=ON but MPI was not found: install the Debian packages libopenmpi-dev openmpi-bin")
  else()
    message(STATUS "MPI not found (libopenmpi-dev): building without the MPI link")
  endif()
endif()

# ---- CUDA ----------------------------------------------------------------------------
set(PIPELM_HAVE_CUDA 0)
if(NOT PIPELM_WITH_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      # 80: A100, 90: H100/H200. Add yours with -DCMAKE_CUDA_ARCHITECTURES=...
      set(CMAKE_CUDA_ARCHITECTURES 80 90)
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(PIPELM_HAVE_CUDA 1)
  elseif(PIPELM_WITH_CUDA STREQUAL "ON")
    message(FATAL_ERROR "PIPELM_WITH_CUDA=ON but nvcc was not found: install the CUDA Toolkit to /usr/local/cuda or set CMAKE_CUDA_COMPILER")
  else()
    message(STATUS "nvcc not found: building without the CUDA backend")
  endif()
endif()

# ---- NCCL ----------------------------------------------------------------------------
# No option yet: the NCCL link between CUDA stages in different processes comes with its code
# (the GPU issue); until then nothing is built against NCCL, so nothing claims to be.

# ---- libsodium (HMAC-SHA256 challenge-response of the TCP links) ------------------------
find_path(SODIUM_INCLUDE_DIR sodium.h)
find_library(SODIUM_LIBRARY sodium)
if(NOT SODIUM_INCLUDE_DIR OR NOT SODIUM_LIBRARY)
  message(FATAL_ERROR "libsodium not found: install the Debian package libsodium-dev (scripts/setup.sh does it)")
endif()

# ---- HTTP server and JSON (pipelm serve) ---------------------------------------------------
# cpp-httplib as Debian builds it (libcpp-httplib-dev: the implementation is a shared library,
# and its pkg-config file carries the feature macros the library was compiled with, which the
# header's class layouts depend on), and nlohmann-json (header-only).
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(HTTPLIB QUIET IMPORTED_TARGET cpp-httplib)
endif()
if(NOT HTTPLIB_FOUND)
  message(FATAL_ERROR "cpp-httplib not found: install the Debian packages libcpp-httplib-dev and pkg-config (scripts/setup.sh does it)")
endif()
find_package(nlohmann_json 3.2 CONFIG QUIET)
if(NOT nlohmann_json_FOUND)
  message(FATAL_ERROR "nlohmann-json not found: install the Debian package nlohmann-json3-dev (scripts/setup.sh does it)")
endif()

# ---- fmt (the bench tables' number formatting) -------------------------------------------------
find_package(fmt 9 CONFIG QUIET)
if(NOT fmt_FOUND)
  message(FATAL_ERROR "fmt not found: install the Debian package libfmt-dev (scripts/setup.sh does it)")
endif()

# ---- xxHash (the model identity of the stage handshake: XXH3-64 of metadata and tensor table) --
find_path(XXHASH_INCLUDE_DIR xxhash.h)
find_library(XXHASH_LIBRARY xxhash)
if(NOT XXHASH_INCLUDE_DIR OR NOT XXHASH_LIBRARY)
  message(FATAL_ERROR "xxHash not found: install the Debian package libxxhash-dev (scripts/setup.sh does it)")
endif()
add_library(xxHash::xxhash INTERFACE IMPORTED)  # the name xxHash's own CMake package exports
set_target_properties(xxHash::xxhash PROPERTIES
  INTERFACE_INCLUDE_DIRECTORIES "${XXHASH_INCLUDE_DIR}" INTERFACE_LINK_LIBRARIES "${XXHASH_LIBRARY}")
