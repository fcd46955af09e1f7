# End-to-end tests of the three pipeline modes (in-process, MPI, TCP) and of their fault
# behaviour (included from tests/runtime/CMakeLists.txt). They run the pipelm executable, mpirun
# and TCP workers on 127.0.0.1: build pipelm first. The MPI parts skip when mpirun is missing;
# the tests set OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM) themselves (for root in containers).
pipelm_add_test(NAME modes_test LABELS mpi net TIMEOUT 300
                SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/modes_test.cc LIBS pipelm_base nlohmann_json::nlohmann_json)
add_dependencies(modes_test pipelm)
pipelm_add_test(NAME faults_test LABELS faults TIMEOUT 300
                SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/faults_test.cc LIBS pipelm_base)
add_dependencies(faults_test pipelm)
pipelm_add_test(NAME recovery_test LABELS faults net TIMEOUT 300
                SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/recovery_test.cc LIBS pipelm_base)
add_dependencies(recovery_test pipelm)
