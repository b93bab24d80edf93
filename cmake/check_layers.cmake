# The include graph follows the layers: a header under include/qtl/<layer>/ includes qtl headers
# of its own layer or of layers below it, never one above, and never an umbrella header
# (qtl/quant.hpp, ...: those sit on top of everything). The order, bottom to top, is README's
# (section "Layout"):
#   core, detail   errors, matrix aliases, validation; fp16, aligned buffers (plain C++)
#   quant          quantizer policies, ggml's type table and block codecs, quantize_matrix
#   format         packed layouts of quantized matrices
#   kernel         reference and SIMD GEMV/GEMM (kernel/common/ and the family folders
#                  kernel/uniform/, table/, lut/, vq/ are all this layer)
#   io             llama2.c and GGUF files
#   calib          calibration (GPTQ, AWQ, rotations, ...)
#   model          the transformer, the driver, recipes, quantized layers
#   c              the C API
# A header's layer is the first folder under qtl/, so subfolders (qtl/kernel/vq/...) belong to
# their top folder's layer.
# Usage: cmake -DQTL_INCLUDE_DIR=<include dir> -P check_layers.cmake (fails, listing every
# include that runs back up, if there is one).
if(NOT QTL_INCLUDE_DIR)
  message(FATAL_ERROR "check_layers: pass -DQTL_INCLUDE_DIR=<folder holding qtl/>")
endif()
set(layers core detail quant format kernel io calib model c)
set(rank_core 0)  # core and detail share the bottom level
set(rank_detail 0)
set(rank 1)
foreach(layer IN ITEMS quant format kernel io calib model c)
  set(rank_${layer} ${rank})
  math(EXPR rank "${rank} + 1")
endforeach()

file(GLOB_RECURSE headers RELATIVE ${QTL_INCLUDE_DIR} ${QTL_INCLUDE_DIR}/qtl/*)
set(violations "")
set(checked 0)
foreach(header IN LISTS headers)
  if(NOT header MATCHES "^qtl/([^/]+)/")
    continue()  # an umbrella header
  endif()
  set(mine ${CMAKE_MATCH_1})
  if(NOT DEFINED rank_${mine})
    string(APPEND violations "\n  ${header}: folder '${mine}' has no place in the layer order")
    continue()
  endif()
  math(EXPR checked "${checked} + 1")
  file(STRINGS ${QTL_INCLUDE_DIR}/${header} lines REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"]qtl/")
  foreach(line IN LISTS lines)
    string(REGEX MATCH "qtl/[^>\"]+" included "${line}")
    if(included MATCHES "^qtl/([^/]+)/")
      set(theirs ${CMAKE_MATCH_1})
      if(NOT DEFINED rank_${theirs})
        string(APPEND violations "\n  ${header} includes ${included}: folder '${theirs}' has no place in the layer order")
      elseif(rank_${theirs} GREATER rank_${mine})
        string(APPEND violations "\n  ${header} (${mine}) includes ${included} (${theirs}, a layer above)")
      endif()
    else()
      string(APPEND violations "\n  ${header} includes the umbrella header ${included}")
    endif()
  endforeach()
endforeach()
if(checked EQUAL 0)
  message(FATAL_ERROR "check_layers: no header found under ${QTL_INCLUDE_DIR}/qtl")
endif()
if(violations)
  message(FATAL_ERROR "check_layers: includes against the layer order (${layers}):${violations}")
endif()
message(STATUS "check_layers: ${checked} headers, every include goes down the layers (${layers})")
