# The layering of pipelm's libraries, enforced by the linker:
#   base <- kernels <- model <- pipeline <- launcher;  base <- transport <- pipeline;
#   base <- gguf <- model;  base, gguf <- tokenizer;  base, kernels <- kernels_cuda <- pipelm_cuda
#   (the run-time module).
# For each library, pipelm_check_layers() links an empty program against the WHOLE library
# (every object, not only those something references) and the layers it may use, nothing else:
# a reference to a higher layer (kernels calling into the model, transport into kernels) is an
# undefined symbol and fails the build. The declared dependencies are checked too, so a new
# target_link_libraries edge that breaks the order stops the configure step.
set(PIPELM_LAYERS
  "pipelm_base:"
  "pipelm_kernels:pipelm_base"
  "pipelm_gguf:pipelm_base"
  "pipelm_tokenizer:pipelm_base,pipelm_gguf"
  "pipelm_transport:pipelm_base"
  "pipelm_model:pipelm_base,pipelm_gguf,pipelm_kernels"
  "pipelm_hf:pipelm_base,pipelm_gguf,pipelm_kernels,pipelm_model,pipelm_tokenizer"
  "pipelm_pipeline:pipelm_base,pipelm_gguf,pipelm_kernels,pipelm_model,pipelm_transport"
  "pipelm_kernels_cuda:pipelm_base,pipelm_kernels")

function(pipelm_check_layers)
  foreach(entry IN LISTS PIPELM_LAYERS)
    string(REPLACE ":" ";" parts "${entry}")
    list(GET parts 0 lib)
    list(LENGTH parts n)
    set(allowed "")
    if(n GREATER 1)
      list(GET parts 1 allowed_csv)
      string(REPLACE "," ";" allowed "${allowed_csv}")
    endif()
    if(NOT TARGET ${lib})
      continue()
    endif()
    # Declared edges: every pipelm_* library it links must be allowed.
    get_target_property(deps ${lib} LINK_LIBRARIES)
    get_target_property(ideps ${lib} INTERFACE_LINK_LIBRARIES)
    foreach(d IN LISTS deps ideps)
      string(REGEX REPLACE "^\\$<LINK_ONLY:(.*)>$" "\\1" d "${d}")
      if(d MATCHES "^pipelm_" AND NOT d IN_LIST allowed)
        message(FATAL_ERROR "layering: ${lib} links ${d}, which is not below it (allowed: ${allowed}); "
                            "see scripts/cmake/PipelmLayers.cmake")
      endif()
    endforeach()
    # Linker check: the whole archive plus the allowed layers only.
    add_executable(layer_check_${lib} ${PROJECT_SOURCE_DIR}/scripts/cmake/layer_check_main.cc)
    target_link_libraries(layer_check_${lib} PRIVATE "$<LINK_LIBRARY:WHOLE_ARCHIVE,${lib}>")
    set_target_properties(layer_check_${lib} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/layer_check)
  endforeach()
endfunction()
