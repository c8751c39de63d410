// load_tokenizer: picks the reader by what the path is (tokenizer.h).
#include <filesystem>

#include "core/error.h"
#include "tokenizer/gguf_vocab.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/spm_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace distill {

namespace fs = std::filesystem;

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (ec || !fs::exists(status))
    throw Error("{}: no such file or directory (expected a tokenizer.json, a SentencePiece "
                ".model, a .gguf file or a model directory)",
                path);
  if (fs::is_directory(status)) {
    // tokenizer.json wins: it carries the normalizer and added tokens the .model lacks.
    for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
      const fs::path candidate = fs::path(path) / name;
      if (fs::exists(candidate)) return load_tokenizer(candidate.string());
    }
    throw Error("{}: the directory has neither tokenizer.json nor tokenizer.model", path);
  }
  const std::string ext = fs::path(path).extension().string();
  if (ext == ".json") return load_hf_tokenizer(path);
  if (ext == ".model") return load_spm_tokenizer(path);
  if (ext == ".gguf") return load_gguf_tokenizer(path);
  throw Error("{}: not a tokenizer file (expected tokenizer.json, a SentencePiece .model, a "
              ".gguf file or a model directory)",
              path);
}

}  // namespace distill
