#include "data/text_corpus.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "tokenizer/byte_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace distill {

TextCorpus TextCorpus::load(const std::vector<std::string>& paths, double val_fraction,
                            int min_window, const Tokenizer* tokenizer) {
  if (paths.empty()) throw Error("no corpus files given");
  if (!(val_fraction >= 0.0 && val_fraction < 1.0))
    throw Error("held-out fraction must be in [0, 1), found {}", val_fraction);
  TextCorpus corpus;
  for (const std::string& path : paths) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error("corpus file '{}': {}", path, std::strerror(errno));
    std::ostringstream ss;
    ss << in.rdbuf();
    if (in.bad()) throw Error("corpus file '{}': read error", path);
    const std::string text = ss.str();
    // The held-out tail is the last size * val_fraction bytes (what `distill eval` holds out);
    // with a tokenizer the split moves to a UTF-8 boundary and each part is encoded on its own.
    size_t start = text.size() - size_t(double(text.size()) * val_fraction);
    if (tokenizer)
      while (start < text.size() && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80)
        start++;
    const std::string_view all(text), train = all.substr(0, start), val = all.substr(start);
    const auto encode = [&](std::string_view part) {
      return tokenizer ? tokenizer->encode(part) : ByteTokenizer::encode(part);
    };
    const std::vector<int32_t> train_ids = encode(train), val_ids = encode(val);
    corpus.train_.insert(corpus.train_.end(), train_ids.begin(), train_ids.end());
    corpus.val_.insert(corpus.val_.end(), val_ids.begin(), val_ids.end());
  }
  if (corpus.train_.size() < size_t(min_window))
    throw Error("corpus ({} file(s), first '{}') has {} training tokens: fewer than one window "
                "of {}", paths.size(), paths[0], corpus.train_.size(), min_window);
  if (val_fraction > 0 && corpus.val_.size() < size_t(min_window))
    throw Error("corpus held-out split has {} tokens: fewer than one window of {} (use a larger "
                "corpus or held-out fraction)", corpus.val_.size(), min_window);
  return corpus;
}

void TextCorpus::sample_train(Rng& rng, int B, int T, int32_t* ids, int32_t* targets) const {
  const uint64_t starts = train_.size() - size_t(T);  // windows of T+1 tokens
  for (int b = 0; b < B; b++) {
    const size_t s = rng.below(starts);
    for (int t = 0; t < T; t++) {
      ids[size_t(b) * T + t] = train_[s + t];
      targets[size_t(b) * T + t] = train_[s + t + 1];
    }
  }
}

void TextCorpus::val_batch(int index, int num_batches, int B, int T, int32_t* ids,
                           int32_t* targets) const {
  const size_t starts = val_.size() - size_t(T);
  const size_t windows = size_t(num_batches) * B;
  for (int b = 0; b < B; b++) {
    const size_t w = size_t(index) * B + b;
    const size_t s = windows > 1 ? w * (starts - 1) / (windows - 1) : 0;
    for (int t = 0; t < T; t++) {
      ids[size_t(b) * T + t] = val_[s + t];
      targets[size_t(b) * T + t] = val_[s + t + 1];
    }
  }
}

}  // namespace distill
