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
    const std::vector<int32_t> ids =
        tokenizer ? tokenizer->encode(ss.str()) : ByteTokenizer::encode(ss.str());
    const size_t nval = size_t(double(ids.size()) * val_fraction);
    corpus.train_.insert(corpus.train_.end(), ids.begin(), ids.end() - nval);
    corpus.val_.insert(corpus.val_.end(), ids.end() - nval, ids.end());
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
