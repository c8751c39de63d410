// `distill train --student-tokenizer`: online distillation between a teacher and a student with
// different vocabularies (distill/uld.h: ULD, exact-match KL, ce). Random byte windows of the
// text are read in both tokenizations; the frozen teacher and the student each run on their own
// tokens, and the KD terms compare only the aligned positions, those whose next tokens start at
// the same byte (distill/token_alignment.h). The saved student carries the student tokenizer.
#pragma once
#include <memory>
#include <string>

#include "train/distill_train.h"

namespace distill {

class Tokenizer;

// --student-tokenizer: "byte" (or "bytes": the byte-level vocabulary of `distill pretrain`), a
// tokenizer.json / tokenizer.model, or a model directory (its tokenizer files, or the byte-level
// vocabulary its weights' metadata names).
std::unique_ptr<Tokenizer> load_student_tokenizer(const std::string& spec);

// True when options.student_tokenizer is set and its fingerprint differs from the teacher's
// tokenizer (otherwise plain distillation applies). Errors when it is set without --teacher.
bool is_cross_tokenizer(const DistillTrainOptions& options);

// The task for distill_train / distill_train_memory_estimate (options must outlive it).
std::unique_ptr<TrainTask> make_cross_tokenizer_task(const DistillTrainOptions& options);

}  // namespace distill
