# CUDA kernels (included from kernels/CMakeLists.txt when PIPELM_HAVE_CUDA), one op family per
# .cu; the CUDA backend module (runtime/CMakeLists.txt: pipelm_cuda) links them. Whole-program
# device linking is not needed (no separable compilation); kernels are built for
# CMAKE_CUDA_ARCHITECTURES (default 80;90: A100, H100/H200).

# launch.cc is the host-only part (launch geometry, shared-memory and workspace planning), plain
# C++ built by the host compiler; the GPU-free tests (tests/cuda/cuda_host_test) compile it too,
# with the host/device headers hd.h, hd_math.h and quant.cuh, and run without cudart or a driver.
add_library(pipelm_kernels_cuda STATIC
  ${CMAKE_CURRENT_LIST_DIR}/launch.cc
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
# Warnings of the .cu files: the host compiler's -Wall -Wextra (as for the .cc files), and ptxas
# reporting every register spill and every use of local memory (a spilled hot kernel reads and
# writes local memory per element). With PIPELM_WARNINGS_AS_ERRORS=ON each of them fails the
# build: ptxas -Werror turns a spill into "ptxas error : Registers are spilled ..." and a
# non-zero exit; nvcc -Werror=all-warnings does the same for nvcc's own diagnostics.
target_compile_options(pipelm_kernels_cuda PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra --ptxas-options=-warn-spills,-warn-lmem-usage>)
if(PIPELM_WARNINGS_AS_ERRORS)
  target_compile_options(pipelm_kernels_cuda PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Werror --ptxas-options=-Werror -Werror=all-warnings>)
endif()
string(REPLACE ";" "," PIPELM_CUDA_ARCHS_STR "${CMAKE_CUDA_ARCHITECTURES}")
target_compile_definitions(pipelm_kernels_cuda PRIVATE PIPELM_CUDA_ARCHS="${PIPELM_CUDA_ARCHS_STR}")
target_link_libraries(pipelm_kernels_cuda PUBLIC pipelm_base pipelm_kernels CUDA::cudart CUDA::cublas)
