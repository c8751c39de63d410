// The tables of unicode_tables.h. Their data is generated at build time from the Unicode
// Character Database by tools/gen_unicode_tables.cpp (cmake/unicode_tables.cmake) into the build
// tree's generated/unicode_tables.inc.
#include "tokenizer/unicode_tables.h"

namespace distill::unicode_tables {

#include "unicode_tables.inc"

}  // namespace distill::unicode_tables
