# libFuzzer targets for every decoder of the bytes a peer sends (included by CMakeLists.txt):
# the TCP greeting, frame headers, the bootstrap's control messages, and each cereal control
# message of the pipeline protocol. Seeds: tests/data/fuzz/<target>/ (tests/fuzz/gen_peer_seeds.cc).
# The cereal messages decode header-only (runtime/pipeline/protocol.h), so they link pipelm_base.
pipelm_add_fuzzer(fuzz_frame fuzz_frame.cc)
target_link_libraries(fuzz_frame PRIVATE pipelm_transport)
pipelm_add_fuzzer(fuzz_greeting fuzz_greeting.cc)
target_link_libraries(fuzz_greeting PRIVATE pipelm_transport)
pipelm_add_fuzzer(fuzz_bootstrap_msg fuzz_bootstrap_msg.cc)
target_link_libraries(fuzz_bootstrap_msg PRIVATE pipelm_transport)
pipelm_add_fuzzer(fuzz_msg_hello fuzz_msg_hello.cc)
target_link_libraries(fuzz_msg_hello PRIVATE pipelm_base)
pipelm_add_fuzzer(fuzz_msg_hello_ack fuzz_msg_hello_ack.cc)
target_link_libraries(fuzz_msg_hello_ack PRIVATE pipelm_base)
pipelm_add_fuzzer(fuzz_msg_seq_start fuzz_msg_seq_start.cc)
target_link_libraries(fuzz_msg_seq_start PRIVATE pipelm_base)
pipelm_add_fuzzer(fuzz_msg_ubatch fuzz_msg_ubatch.cc)
target_link_libraries(fuzz_msg_ubatch PRIVATE pipelm_base)
pipelm_add_fuzzer(fuzz_msg_result fuzz_msg_result.cc)
target_link_libraries(fuzz_msg_result PRIVATE pipelm_base)
pipelm_add_fuzzer(fuzz_msg_worker_job fuzz_msg_worker_job.cc)
target_link_libraries(fuzz_msg_worker_job PRIVATE pipelm_base)
