# GGUF reader/writer tests, the malformed-file guarantees and mkmodel's --ftype mixes (included
# from tests/runtime/CMakeLists.txt).
pipelm_add_test(NAME gguf_test LABELS unit SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/gguf_test.cc ${CMAKE_CURRENT_SOURCE_DIR}/gguf_model_test.cc
                ${CMAKE_CURRENT_SOURCE_DIR}/mkmodel_ftype_test.cc LIBS pipelm_runtime)
# Runs the pipelm executable on malformed inputs: build it first.
pipelm_add_test(NAME cli_errors_test LABELS unit cli SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/cli_errors_test.cc
                ${CMAKE_CURRENT_SOURCE_DIR}/cli_flags_test.cc ${CMAKE_CURRENT_SOURCE_DIR}/cli_defects_test.cc
                LIBS pipelm_runtime)
add_dependencies(cli_errors_test pipelm)
