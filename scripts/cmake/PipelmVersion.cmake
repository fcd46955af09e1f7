# Writes OUT (a header) with the project version and the git commit of SRC, rewriting it only when
# its text changes, so that only launcher/main.cc recompiles after a commit. Run at every build by
# the pipelm_version target (CMakeLists.txt): the commit of an incremental build is the one it was
# built from. Without git or a .git (a source tarball) the commit is "unknown".
#   cmake -DSRC=<source dir> -DOUT=<header> -DVERSION=x.y.z -DCUDA_VERSION=<x.y or empty> -P PipelmVersion.cmake
set(commit "unknown")
find_package(Git QUIET)
if(GIT_FOUND AND EXISTS "${SRC}/.git")
  # GIT_OPTIONAL_LOCKS=0: --dirty refreshes the index only when no one else holds its lock.
  execute_process(COMMAND ${CMAKE_COMMAND} -E env GIT_OPTIONAL_LOCKS=0
                          ${GIT_EXECUTABLE} -C "${SRC}" describe --always --dirty --abbrev=12
                  OUTPUT_VARIABLE out RESULT_VARIABLE rc ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(rc EQUAL 0 AND NOT out STREQUAL "")
    set(commit "${out}")
  endif()
endif()
string(CONCAT text "// Generated at build time by scripts/cmake/PipelmVersion.cmake (do not edit)\n"
                   "#pragma once\n"
                   "#define PIPELM_VERSION \"${VERSION}\"\n"
                   "#define PIPELM_GIT_COMMIT \"${commit}\"\n"
                   "#define PIPELM_CUDA_VERSION \"${CUDA_VERSION}\"\n")
set(old "")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
endif()
if(NOT old STREQUAL text)
  file(WRITE "${OUT}" "${text}")
endif()
