# mmrec_compile_model(<target> MODEL <file.mlir> [NAME <name>] [TARGETS all|cpu|nvptx]
#                     [OPTIONS <extra mmrec-compile flags>...])
#
# Compiles a model file with mmrec-compile at build time and makes <target>
# a static library holding its kernels (the CPU object, the embedded PTX /
# cubin) and the generated C++ launch API. Link <target> and include
# "<name>.h"; the launch functions live in namespace mmrec::gen::<name>.
function(mmrec_compile_model target)
  cmake_parse_arguments(ARG "" "MODEL;NAME;TARGETS" "OPTIONS" ${ARGN})
  if(NOT ARG_NAME)
    get_filename_component(ARG_NAME ${ARG_MODEL} NAME_WE)
    string(MAKE_C_IDENTIFIER ${ARG_NAME} ARG_NAME)
  endif()
  if(NOT ARG_TARGETS)
    set(ARG_TARGETS all)
  endif()
  set(out ${CMAKE_CURRENT_BINARY_DIR}/${target}.gen)
  set(outputs ${out}/${ARG_NAME}.h ${out}/${ARG_NAME}.cpp ${out}/${ARG_NAME}.manifest.json)
  if(NOT ARG_TARGETS STREQUAL "nvptx")
    list(APPEND outputs ${out}/${ARG_NAME}.cpu.o)
  endif()
  add_custom_command(
    OUTPUT ${outputs}
    COMMAND mmrec-compile ${ARG_MODEL} -o ${out} --name=${ARG_NAME} --target=${ARG_TARGETS} ${ARG_OPTIONS}
    DEPENDS mmrec-compile ${ARG_MODEL}
    COMMENT "mmrec-compile ${ARG_MODEL}"
    VERBATIM)
  set(srcs ${out}/${ARG_NAME}.cpp)
  if(NOT ARG_TARGETS STREQUAL "nvptx")
    list(APPEND srcs ${out}/${ARG_NAME}.cpu.o)
    set_source_files_properties(${out}/${ARG_NAME}.cpu.o PROPERTIES EXTERNAL_OBJECT TRUE GENERATED TRUE)
  endif()
  add_library(${target} STATIC ${srcs})
  target_include_directories(${target} PUBLIC ${out})
  target_link_libraries(${target} PUBLIC mmrec_runtime)
endfunction()
