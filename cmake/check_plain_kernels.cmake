# The per-ISA kernels see plain data only: every per-ISA kernel header of every kernel family
# (qtl/kernel/<family>/portable.hpp, avx2.hpp, avx512.hpp; uniform/avx2_body.inc comes in through
# uniform/avx2.hpp) and every kernel layout view they read (qtl/kernel/<family>/layout.hpp)
# compiles on its own without Eigen: not included directly, nor through a qtl/quant or qtl/format
# header. What they include (common/target.hpp, common/prefetch.hpp, qtl/quant/e8p_grid.hpp,
# qtl/format/blocks.hpp, ...) is checked with them. The code that builds the views from the packed
# formats (qtl/kernel/<family>/repack.hpp, the kernel_matrix.hpp headers) may use anything below
# the kernel layer (cmake/check_layers.cmake).
# Each header is compiled syntax-only in a TU of its own, with Eigen on the include path:
#   #include "qtl/kernel/<family>/<header>"
#   #if defined(EIGEN_WORLD_VERSION)   (set by every Eigen header)
#   #error ...
# Usage: cmake -DQTL_INCLUDE_DIR=<include dir> -DQTL_CXX=<C++ compiler>
#              -DQTL_EIGEN_INCLUDE_DIRS=<dir>[|<dir>...] -DQTL_WORK_DIR=<scratch dir>
#              -P check_plain_kernels.cmake
# (fails, naming every header that sees Eigen or does not compile on its own, if there is one).
foreach(var IN ITEMS QTL_INCLUDE_DIR QTL_CXX QTL_WORK_DIR)
  if(NOT ${var})
    message(FATAL_ERROR "check_plain_kernels: pass -D${var}=...")
  endif()
endforeach()

file(GLOB headers RELATIVE ${QTL_INCLUDE_DIR}
     ${QTL_INCLUDE_DIR}/qtl/kernel/*/portable.hpp
     ${QTL_INCLUDE_DIR}/qtl/kernel/*/avx2.hpp
     ${QTL_INCLUDE_DIR}/qtl/kernel/*/avx512.hpp
     ${QTL_INCLUDE_DIR}/qtl/kernel/*/layout.hpp)
list(SORT headers)
if(NOT headers)
  message(FATAL_ERROR "check_plain_kernels: no per-ISA kernel header found under ${QTL_INCLUDE_DIR}/qtl/kernel/<family>/")
endif()

set(flags -std=c++20 -fsyntax-only -I${QTL_INCLUDE_DIR})
string(REPLACE "|" ";" eigen_dirs "${QTL_EIGEN_INCLUDE_DIRS}")
foreach(dir IN LISTS eigen_dirs)
  list(APPEND flags -isystem ${dir})
endforeach()

file(MAKE_DIRECTORY ${QTL_WORK_DIR})
set(failures "")
foreach(header IN LISTS headers)
  string(REPLACE "/" "__" tu_name ${header})
  set(tu ${QTL_WORK_DIR}/${tu_name}.cpp)
  file(WRITE ${tu} "#include \"${header}\"\n#if defined(EIGEN_WORLD_VERSION)\n#error \"${header} sees Eigen\"\n#endif\n")
  execute_process(COMMAND ${QTL_CXX} ${flags} ${tu} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    if(out MATCHES "sees Eigen")
      string(APPEND failures "\n  ${header} sees Eigen")
    else()
      string(REGEX MATCH "[^\n]*error[^\n]*" first_error "${out}")
      string(APPEND failures "\n  ${header} does not compile on its own: ${first_error}")
    endif()
  endif()
endforeach()
list(LENGTH headers n)
if(failures)
  message(FATAL_ERROR "check_plain_kernels: kernel headers that must see plain data only:${failures}")
endif()
message(STATUS "check_plain_kernels: ${n} per-ISA kernel and layout headers compile without Eigen")
