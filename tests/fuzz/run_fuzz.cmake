# ctest's gguf_fuzz_smoke (tests/CMakeLists.txt): builds the GGUF fuzz target with clang, writes
# its seed files with qtl's own writer and fuzzes for QTL_FUZZ_SECONDS. New inputs go to a
# scratch folder in the build tree, never to the source tree. Any finding fails the test and
# leaves crash-* files in QTL_FUZZ_DIR.
#   -DQTL_BUILD_DIR=  -DQTL_FUZZ_DIR=  -DQTL_FUZZ_SECONDS=
execute_process(COMMAND ${CMAKE_COMMAND} --build ${QTL_BUILD_DIR} --target qtl_fuzz_gguf
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building qtl_fuzz_gguf failed")
endif()
file(REMOVE_RECURSE ${QTL_FUZZ_DIR}/seeds ${QTL_FUZZ_DIR}/corpus)
file(MAKE_DIRECTORY ${QTL_FUZZ_DIR}/corpus)
execute_process(COMMAND ${QTL_FUZZ_DIR}/gguf_seeds ${QTL_FUZZ_DIR}/seeds RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "writing the seed files failed")
endif()
execute_process(COMMAND ${QTL_FUZZ_DIR}/gguf_fuzz -max_total_time=${QTL_FUZZ_SECONDS} -max_len=4096
                        -timeout=10 ${QTL_FUZZ_DIR}/corpus ${QTL_FUZZ_DIR}/seeds
                WORKING_DIRECTORY ${QTL_FUZZ_DIR} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the GGUF fuzz target found a failing input (see ${QTL_FUZZ_DIR})")
endif()
