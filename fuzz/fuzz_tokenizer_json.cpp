// libFuzzer target: load_tokenizer on an arbitrary tokenizer.json, then encode (plain and with
// special-token parsing) and decode a few texts; and the GGUF export's reading of the same file
// (gguf_vocab_from_file). Anything but a distill::Error is a finding.
#include <cstdint>
#include <string>

#include "core/error.h"
#include "formats/gguf_export_vocab.h"
#include "fuzz_input_file.h"
#include "tokenizer/tokenizer.h"

using namespace distill;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input(data, size, "tokenizer.json");
  try {
    gguf_vocab_from_file(path);
  } catch (const Error&) {
  }
  try {
    const std::unique_ptr<Tokenizer> t = load_tokenizer(path);
    static const char* texts[] = {"Hello world", "  \n\t x", "h\xC3\xA9llo \xF0\x9F\x98\x80 \xE4\xB8\xAD",
                                  "<|endoftext|><s>", "\xFF\xFE invalid utf-8 \xC3", ""};
    EncodeOptions special;
    special.parse_special = true;
    special.add_special_tokens = true;
    for (const char* text : texts) {
      for (const EncodeOptions& o : {EncodeOptions{}, special}) {
        const std::vector<int32_t> ids = t->encode(text, o);
        for (int32_t id : ids)
          if (id < 0 || id >= t->vocab_size()) __builtin_trap();
        t->decode(ids);
        t->decode(ids, true);
      }
    }
    for (int32_t id = 0; id < t->vocab_size() && id < 64; id++) t->token_text(id);
    t->fingerprint();
  } catch (const Error&) {
  }
  return 0;
}
