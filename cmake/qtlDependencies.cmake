# Finds qtl's dependencies. Included by the top-level CMakeLists.txt and by the installed
# qtlConfig.cmake, so a consumer's find_package(qtl) finds Eigen and xsimd itself.
#
# Debian's xsimd 8.1 exports a target `xsimd` whose INTERFACE_LINK_LIBRARIES names a bare `xtl`
# that its config never finds: linking it fails with "cannot find -lxtl". Find xtl first when it
# is installed (it then is a header-only target); otherwise drop the dangling name.
include(CMakeFindDependencyMacro)
find_dependency(Eigen3 3.4 NO_MODULE)
find_package(xtl QUIET)
find_dependency(xsimd 8)
if(TARGET xsimd AND NOT TARGET xtl)
  get_target_property(_qtl_xsimd_libs xsimd INTERFACE_LINK_LIBRARIES)
  if(_qtl_xsimd_libs)
    list(REMOVE_ITEM _qtl_xsimd_libs xtl)
    set_target_properties(xsimd PROPERTIES INTERFACE_LINK_LIBRARIES "${_qtl_xsimd_libs}")
  endif()
  unset(_qtl_xsimd_libs)
endif()
