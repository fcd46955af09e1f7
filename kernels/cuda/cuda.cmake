# CUDA backend (included from kernels/CMakeLists.txt when PIPELM_HAVE_CUDA): the kernels, one op
# family per .cu, and the CUDA stage (runtime/model/glm4_stage_cuda.cc), which pipelm_runtime
# links through this library. Whole-program device linking is not needed (no separable
# compilation); kernels are built for CMAKE_CUDA_ARCHITECTURES (default 80;90: A100, H100/H200).
add_library(pipelm_kernels_cuda STATIC
  ${CMAKE_CURRENT_LIST_DIR}/add.cu
  ${CMAKE_CURRENT_LIST_DIR}/argmax.cu
  ${CMAKE_CURRENT_LIST_DIR}/attention.cu
  ${CMAKE_CURRENT_LIST_DIR}/dequant.cu
  ${CMAKE_CURRENT_LIST_DIR}/embedding.cu
  ${CMAKE_CURRENT_LIST_DIR}/matmul.cu
  ${CMAKE_CURRENT_LIST_DIR}/rms_norm.cu
  ${CMAKE_CURRENT_LIST_DIR}/rope.cu
  ${CMAKE_CURRENT_LIST_DIR}/swiglu.cu
)
set_target_properties(pipelm_kernels_cuda PROPERTIES
  CUDA_SEPARABLE_COMPILATION OFF
  CUDA_STANDARD 17
  CUDA_STANDARD_REQUIRED ON
  POSITION_INDEPENDENT_CODE ON)
# No fast math anywhere: IEEE division/sqrt and accurate expf keep results within FP32 rounding
# of the CPU backend (these are nvcc's defaults; stated so nobody adds --use_fast_math).
target_compile_options(pipelm_kernels_cuda PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:-prec-div=true -prec-sqrt=true -ftz=false>)
string(REPLACE ";" "," PIPELM_CUDA_ARCHS_STR "${CMAKE_CUDA_ARCHITECTURES}")
target_compile_definitions(pipelm_kernels_cuda PRIVATE PIPELM_CUDA_ARCHS="${PIPELM_CUDA_ARCHS_STR}")
target_link_libraries(pipelm_kernels_cuda PUBLIC pipelm_base pipelm_kernels CUDA::cudart CUDA::cublas)
