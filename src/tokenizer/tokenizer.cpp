#include "tokenizer/tokenizer.h"

#include <exception>

namespace distill {

std::vector<std::vector<int32_t>> Tokenizer::encode_batch(
    const std::vector<std::string_view>& texts, const EncodeOptions& options) const {
  std::vector<std::vector<int32_t>> out(texts.size());
  std::exception_ptr error;
  // Dynamic chunks: line lengths vary a lot. An exception must not leave an OpenMP region, so
  // the first one is kept and rethrown after it.
#pragma omp parallel for schedule(dynamic, 16)
  for (size_t i = 0; i < texts.size(); i++) {
    try {
      out[i] = encode(texts[i], options);
    } catch (...) {
#pragma omp critical(distill_tokenizer_batch_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
  return out;
}

}  // namespace distill
