# Unicode property tables for the pre-tokenizer regexes (src/tokenizer/unicode_tables.h), made at
# build time from the Unicode Character Database (Debian's unicode-data) by our own generator,
# which also records what PCRE2's built-in tables say so that regex.cpp can keep PCRE2's fast
# property tests wherever the two agree.
set(DISTILL_UCD_DIR "/usr/share/unicode" CACHE PATH
    "Unicode Character Database (UnicodeData.txt, PropList.txt, DerivedCoreProperties.txt)")
foreach(ucd_file UnicodeData.txt PropList.txt DerivedCoreProperties.txt)
  if(NOT EXISTS "${DISTILL_UCD_DIR}/${ucd_file}")
    message(FATAL_ERROR "${DISTILL_UCD_DIR}/${ucd_file} is missing: install Debian's unicode-data "
                        "(scripts/install-deps) or set DISTILL_UCD_DIR")
  endif()
endforeach()

add_executable(gen_unicode_tables tools/gen_unicode_tables.cpp)
target_include_directories(gen_unicode_tables PRIVATE src)  # unicode_tables.h's constants
target_link_libraries(gen_unicode_tables PRIVATE PkgConfig::PCRE2)

# src/tokenizer/unicode_tables.cpp includes the generated definitions.
set(DISTILL_UNICODE_TABLES "${CMAKE_BINARY_DIR}/generated/unicode_tables.inc")
add_custom_command(
  OUTPUT "${DISTILL_UNICODE_TABLES}"
  COMMAND ${CMAKE_COMMAND} -E make_directory "${CMAKE_BINARY_DIR}/generated"
  COMMAND gen_unicode_tables "${DISTILL_UCD_DIR}" "${DISTILL_UNICODE_TABLES}"
  DEPENDS gen_unicode_tables "${DISTILL_UCD_DIR}/UnicodeData.txt"
          "${DISTILL_UCD_DIR}/PropList.txt" "${DISTILL_UCD_DIR}/DerivedCoreProperties.txt"
  COMMENT "Generating Unicode tables from ${DISTILL_UCD_DIR}"
  VERBATIM)
target_sources(distill_lib PRIVATE "${DISTILL_UNICODE_TABLES}")
target_include_directories(distill_lib PRIVATE "${CMAKE_BINARY_DIR}/generated")
set_source_files_properties("${CMAKE_SOURCE_DIR}/src/tokenizer/unicode_tables.cpp" PROPERTIES
                            OBJECT_DEPENDS "${DISTILL_UNICODE_TABLES}")

# tests/tokenizer_unicode_test.cpp reads the emoji sequences (emoji/emoji-test.txt) from here.
if(TARGET tokenizer_unicode_test)
  target_compile_definitions(tokenizer_unicode_test PRIVATE DISTILL_UCD_DIR="${DISTILL_UCD_DIR}")
endif()
