# Installs the qtl build tree into a fresh prefix, then builds and runs tests/consumer against it.
file(REMOVE_RECURSE ${QTL_WORK_DIR})
set(prefix ${QTL_WORK_DIR}/prefix)
execute_process(COMMAND ${CMAKE_COMMAND} --install ${QTL_BUILD_DIR} --prefix ${prefix}
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "install into ${prefix} failed: ${rc}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${QTL_CONSUMER_SOURCE} -B ${QTL_WORK_DIR}/build
                        -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}
                        -DCMAKE_BUILD_TYPE=Release
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "configuring the consumer against ${prefix} failed: ${rc}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${QTL_WORK_DIR}/build RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "building the consumer failed: ${rc}")
endif()
execute_process(COMMAND ${QTL_WORK_DIR}/build/consumer RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "the consumer failed: ${rc}")
endif()
