// libFuzzer target: a SentencePiece tokenizer.model from arbitrary bytes, read by the GGUF
// export's protobuf reader (gguf_vocab_from_file) and by load_tokenizer (the SentencePiece
// library), then encoded and decoded. Anything but a distill::Error is a finding.
#include <cstdint>

#include "core/error.h"
#include "formats/gguf_export_vocab.h"
#include "fuzz_input_file.h"
#include "tokenizer/tokenizer.h"

using namespace distill;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input(data, size, "tokenizer.model");
  try {
    const GgufVocab v = gguf_vocab_from_file(path);
    if (v.tokens.size() != v.scores.size() || v.tokens.size() != v.types.size()) __builtin_trap();
  } catch (const Error&) {
  }
  try {
    const std::unique_ptr<Tokenizer> t = load_tokenizer(path);
    for (const char* text : {"Hello world", " \n", "h\xC3\xA9llo \xF0\x9F\x98\x80", "\xFF"}) {
      const std::vector<int32_t> ids = t->encode(text);
      for (int32_t id : ids)
        if (id < 0 || id >= t->vocab_size()) __builtin_trap();
      t->decode(ids);
    }
  } catch (const Error&) {
  }
  return 0;
}
