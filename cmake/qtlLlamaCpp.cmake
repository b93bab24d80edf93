# Finds the llama.cpp that scripts/install-llama-cpp.sh installs (node-llama-cpp's prebuilt
# linux-x64 libraries and the source of the same release) and defines imported targets for it:
#   qtl_llama::ggml_base   libggml-base (type traits, ggml_quantize_chunk, the gguf API)
#   qtl_llama::ggml        libggml (backend registry; loads the CPU variants at run time)
#   qtl_llama::llama       libllama
#   qtl_llama::common      libllama-common (llama.cpp's tools link it)
# QTL_LLAMA_CPP_FOUND is ON when all of them are there; QTL_LLAMA_CPP_BINS is the library folder
# (the CPU backend variants load from the executable's folder or from there), QTL_LLAMA_CPP_SRC
# the source tree.
set(QTL_LLAMA_CPP_DIR "${PROJECT_SOURCE_DIR}/.deps/llama.cpp" CACHE PATH
    "Where scripts/install-llama-cpp.sh installed node-llama-cpp (GGUF engine tests)")
set(QTL_LLAMA_CPP_BINS "${QTL_LLAMA_CPP_DIR}/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64")
set(QTL_LLAMA_CPP_SRC "${QTL_LLAMA_CPP_DIR}/src")
set(QTL_LLAMA_CPP_FOUND OFF)
if(EXISTS "${QTL_LLAMA_CPP_BINS}/libggml-base.so" AND EXISTS "${QTL_LLAMA_CPP_BINS}/libllama-common.so"
   AND EXISTS "${QTL_LLAMA_CPP_SRC}/ggml/include/ggml.h" AND EXISTS "${QTL_LLAMA_CPP_SRC}/include/llama.h")
  set(QTL_LLAMA_CPP_FOUND ON)
  foreach(lib IN ITEMS ggml_base:libggml-base.so ggml:libggml.v0.4.0.so llama:libllama.v0.4.0.so
                       common:libllama-common.so)
    string(REPLACE ":" ";" pair ${lib})
    list(GET pair 0 name)
    list(GET pair 1 file)
    if(NOT TARGET qtl_llama::${name})
      add_library(qtl_llama::${name} SHARED IMPORTED)
      set_target_properties(qtl_llama::${name} PROPERTIES IMPORTED_LOCATION "${QTL_LLAMA_CPP_BINS}/${file}")
      target_include_directories(qtl_llama::${name} SYSTEM INTERFACE "${QTL_LLAMA_CPP_SRC}/ggml/include"
                                 "${QTL_LLAMA_CPP_SRC}/include")
    endif()
  endforeach()
  set_property(TARGET qtl_llama::ggml APPEND PROPERTY INTERFACE_LINK_LIBRARIES qtl_llama::ggml_base)
  set_property(TARGET qtl_llama::llama APPEND PROPERTY INTERFACE_LINK_LIBRARIES qtl_llama::ggml)
  set_property(TARGET qtl_llama::common APPEND PROPERTY INTERFACE_LINK_LIBRARIES qtl_llama::llama)
  target_include_directories(qtl_llama::common SYSTEM INTERFACE "${QTL_LLAMA_CPP_SRC}/common")
  message(STATUS "qtl: llama.cpp from node-llama-cpp found in ${QTL_LLAMA_CPP_DIR}")
else()
  message(STATUS "qtl: llama.cpp (node-llama-cpp) not found in ${QTL_LLAMA_CPP_DIR}: GGUF engine tests not built "
                 "(scripts/install-llama-cpp.sh installs it)")
endif()
