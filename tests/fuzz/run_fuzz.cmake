# ctest's <name>_fuzz_smoke (tests/CMakeLists.txt): builds the fuzz target <name>_fuzz with
# clang, writes its seed files (<name>_seeds, qtl's own writers) and fuzzes for
# QTL_FUZZ_SECONDS. New inputs go to a scratch folder in the build tree, never to the source
# tree. Any finding fails the test and leaves crash-* files in QTL_FUZZ_DIR/<name>.
#   -DQTL_BUILD_DIR=  -DQTL_FUZZ_DIR=  -DQTL_FUZZ_NAME=gguf|model  -DQTL_FUZZ_SECONDS=
execute_process(COMMAND ${CMAKE_COMMAND} --build ${QTL_BUILD_DIR} --target qtl_fuzz_${QTL_FUZZ_NAME}
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building qtl_fuzz_${QTL_FUZZ_NAME} failed")
endif()
set(work ${QTL_FUZZ_DIR}/${QTL_FUZZ_NAME})
file(REMOVE_RECURSE ${work})
file(MAKE_DIRECTORY ${work}/corpus)
execute_process(COMMAND ${QTL_FUZZ_DIR}/${QTL_FUZZ_NAME}_seeds ${work}/seeds RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "writing the seed files failed")
endif()
execute_process(COMMAND ${QTL_FUZZ_DIR}/${QTL_FUZZ_NAME}_fuzz -max_total_time=${QTL_FUZZ_SECONDS} -max_len=8192
                        -timeout=10 ${work}/corpus ${work}/seeds
                WORKING_DIRECTORY ${work} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the ${QTL_FUZZ_NAME} fuzz target found a failing input (see ${work})")
endif()
