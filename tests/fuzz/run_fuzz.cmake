# ctest's <name>_fuzz_smoke (tests/CMakeLists.txt): writes the seed files (QTL_SEEDS_EXE, qtl's
# own writers) and runs the fuzz target QTL_FUZZ_EXE on them for QTL_FUZZ_SECONDS. New inputs go
# to a scratch folder in the build tree (QTL_FUZZ_DIR), never to the source tree. Any finding
# fails the test and leaves crash-* files in QTL_FUZZ_DIR.
#   -DQTL_FUZZ_EXE=  -DQTL_SEEDS_EXE=  -DQTL_FUZZ_DIR=  -DQTL_FUZZ_SECONDS=
file(REMOVE_RECURSE ${QTL_FUZZ_DIR})
file(MAKE_DIRECTORY ${QTL_FUZZ_DIR}/corpus)
execute_process(COMMAND ${QTL_SEEDS_EXE} ${QTL_FUZZ_DIR}/seeds RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "writing the seed files failed (${QTL_SEEDS_EXE}: ${rc})")
endif()
execute_process(COMMAND ${QTL_FUZZ_EXE} -max_total_time=${QTL_FUZZ_SECONDS} -max_len=8192
                        -timeout=10 ${QTL_FUZZ_DIR}/corpus ${QTL_FUZZ_DIR}/seeds
                WORKING_DIRECTORY ${QTL_FUZZ_DIR} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the fuzz target ${QTL_FUZZ_EXE} found a failing input (see ${QTL_FUZZ_DIR})")
endif()
