// Cross-tokenizer distillation: the ULD and exact-match KL losses (values and finite-difference
// gradients), the byte-offset alignment of two tokenizations, and `distill train
// --student-tokenizer` end to end, both ways (BPE student of a byte teacher, byte student of a
// BPE teacher).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>

#include "core/file.h"
#include "core/rng.h"
#include "distill/token_alignment.h"
#include "distill/uld.h"
#include "formats/model_dir.h"
#include "model/presets.h"
#include "test_support.h"
#include "tiny_teacher.h"
#include "tokenizer/bpe_trainer.h"
#include "tokenizer/byte_tokenizer_adapter.h"
#include "train/distill_train.h"

namespace distill {
namespace {
namespace fs = std::filesystem;
using test_support::error_of;
using test_support::temp_dir;

// Distinct logits: a random permutation of evenly spaced values (spacing `step`), so that no two
// probabilities are close and a finite-difference step never reorders the sort.
std::vector<float> distinct_logits(int n, float step, Rng& rng) {
  std::vector<float> z(n);
  for (int i = 0; i < n; i++) z[i] = step * float(i) - step * float(n) / 2;
  for (int i = n - 1; i > 0; i--) std::swap(z[i], z[rng.below(uint64_t(i) + 1)]);
  return z;
}

// Central differences of `loss` over every student logit against its analytic gradient.
// `loss(z, dz)` returns the loss of student logits z and accumulates its gradient into dz.
void expect_gradient_matches(std::vector<float> z,
                             const std::function<double(const float*, float*)>& loss,
                             const std::string& what) {
  std::vector<float> analytic(z.size(), 0.0f);
  loss(z.data(), analytic.data());
  const float h = 1e-3f;
  double max_err = 0.0, max_grad = 0.0;
  for (size_t k = 0; k < z.size(); k++) {
    const float z0 = z[k];
    z[k] = z0 + h;
    const double up = loss(z.data(), nullptr);
    z[k] = z0 - h;
    const double down = loss(z.data(), nullptr);
    z[k] = z0;
    const double fd = (up - down) / (double(z0 + h) - double(z0 - h));
    max_err = std::max(max_err, std::fabs(fd - analytic[k]));
    max_grad = std::max(max_grad, std::fabs(double(analytic[k])));
    EXPECT_NEAR(analytic[k], fd, 2e-4 + 2e-3 * std::fabs(fd)) << what << " logit " << k;
  }
  EXPECT_GT(max_grad, 1e-3) << what << ": a gradient of zero checks nothing";
}

// Three student rows and four teacher rows, two aligned pairs: row 1 of the student is unpaired
// and must get no gradient. The teacher is the more peaked: when every sorted student probability
// exceeds the teacher's at its rank (a flat teacher over a larger vocabulary), ULD is constant in
// the student's logits and its gradient is rightly zero, which would check nothing.
struct PairedRows {
  int Vs, Vt;
  std::vector<float> student, teacher;
  std::vector<AlignedRow> rows = {{0, 1}, {2, 3}};
  PairedRows(int vs, int vt, uint64_t seed) : Vs(vs), Vt(vt) {
    Rng rng(seed);
    for (int r = 0; r < 3; r++) {
      auto z = distinct_logits(Vs, 0.37f, rng);
      student.insert(student.end(), z.begin(), z.end());
    }
    for (int r = 0; r < 4; r++) {
      auto z = distinct_logits(Vt, 1.3f, rng);
      teacher.insert(teacher.end(), z.begin(), z.end());
    }
  }
};

TEST(Uld, GradientMatchesFiniteDifferences) {
  for (auto [Vs, Vt, T] : {std::tuple{7, 5, 1.0f}, std::tuple{5, 9, 2.0f},
                           std::tuple{6, 6, 0.5f}, std::tuple{11, 4, 1.5f}}) {
    const PairedRows p(Vs, Vt, uint64_t(Vs * 100 + Vt));
    const std::string what = fmt::format("uld Vs={} Vt={} T={}", Vs, Vt, T);
    expect_gradient_matches(p.student, [&](const float* z, float* dz) {
      return uld_loss(z, Vs, p.teacher.data(), Vt, p.rows, T, 0.7, dz);
    }, what);
    std::vector<float> dz(p.student.size(), 0.0f);
    uld_loss(p.student.data(), Vs, p.teacher.data(), Vt, p.rows, T, 0.7, dz.data());
    for (int k = 0; k < Vs; k++) EXPECT_EQ(dz[Vs + k], 0.0f) << what << ": unpaired row";
  }
}

TEST(Uld, HandComputedValues) {
  // q = (0.25, 0.75), p = (0.5, 0.3, 0.2): sorted and padded, |0.75-0.5| + |0.25-0.3| + |0-0.2|.
  const std::vector<float> s = {0.0f, std::log(3.0f)};
  const std::vector<float> t = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  const std::vector<AlignedRow> one = {{0, 0}};
  EXPECT_NEAR(uld_loss(s.data(), 2, t.data(), 3, one, 1.0f, 1.0, nullptr), 0.5, 1e-6);
  // At T = 2 the same distributions come from doubled logits, and the loss is scaled by T^2.
  const std::vector<float> s2 = {0.0f, 2 * std::log(3.0f)};
  const std::vector<float> t2 = {2 * std::log(0.5f), 2 * std::log(0.3f), 2 * std::log(0.2f)};
  EXPECT_NEAR(uld_loss(s2.data(), 2, t2.data(), 3, one, 2.0f, 1.0, nullptr), 2.0, 1e-5);
  // The scale multiplies the value.
  EXPECT_NEAR(uld_loss(s.data(), 2, t.data(), 3, one, 1.0f, 0.25, nullptr), 0.125, 1e-6);
}

TEST(Uld, ZeroForAPermutedVocabulary) {
  Rng rng(5);
  const std::vector<float> s = distinct_logits(9, 0.4f, rng);
  std::vector<int> perm(9);
  std::iota(perm.begin(), perm.end(), 0);
  std::reverse(perm.begin(), perm.end());
  std::swap(perm[0], perm[4]);
  std::vector<float> t(9);
  for (int i = 0; i < 9; i++) t[perm[i]] = s[i];
  std::vector<float> dz(9, 0.0f);
  const std::vector<AlignedRow> one = {{0, 0}};
  EXPECT_NEAR(uld_loss(s.data(), 9, t.data(), 9, one, 1.3f, 1.0, dz.data()), 0.0, 1e-7);
  // A different distribution is not free.
  t[perm[0]] += 1.0f;
  EXPECT_GT(uld_loss(s.data(), 9, t.data(), 9, one, 1.3f, 1.0, nullptr), 1e-3);
}

// Student tokens a, b, c, d, "" (special); teacher tokens b, a, x, y, d, d: a, b and d match
// (d through the teacher's lowest id 4), c and the special token go to the bucket.
const std::vector<std::string> kStudentTokens = {"a", "b", "c", "d", ""};
const std::vector<std::string> kTeacherTokens = {"b", "a", "x", "y", "d", "d"};

TEST(ExactMatch, VocabularyMatchPairsIdenticalBytesOnce) {
  const VocabularyMatch m = VocabularyMatch::exact(kStudentTokens, kTeacherTokens);
  EXPECT_EQ(m.student_ids, (std::vector<int32_t>{0, 1, 3}));
  EXPECT_EQ(m.teacher_ids, (std::vector<int32_t>{1, 0, 4}));
  EXPECT_EQ(m.teacher_of_student, (std::vector<int32_t>{1, 0, -1, 4, -1}));
  EXPECT_EQ(m.teacher_matched, (std::vector<uint8_t>{1, 1, 0, 0, 1, 0}));
}

TEST(ExactMatch, HandComputedValueAndZeroAtTheMappedTeacher) {
  // Teacher p = (b .4, a .3, x .2, y .1); student q = (a .5, b .25, c .25): matched a, b and the
  // bucket {c} against the teacher's {x, y}.
  const VocabularyMatch m = VocabularyMatch::exact({"a", "b", "c"}, {"b", "a", "x", "y"});
  const std::vector<float> t = {std::log(0.4f), std::log(0.3f), std::log(0.2f), std::log(0.1f)};
  const std::vector<float> s = {std::log(0.5f), std::log(0.25f), std::log(0.25f)};
  const std::vector<AlignedRow> one = {{0, 0}};
  const double want = 0.3 * std::log(0.3 / 0.5) + 0.4 * std::log(0.4 / 0.25) +
                      0.3 * std::log(0.3 / 0.25);
  EXPECT_NEAR(exact_match_kl_loss(s.data(), t.data(), m, one, 1.0f, 1.0, nullptr), want, 1e-6);
  // The student that equals the mapped teacher (a .3, b .4, bucket .3): zero loss and gradient.
  const std::vector<float> s0 = {std::log(0.3f), std::log(0.4f), std::log(0.3f)};
  std::vector<float> dz(3, 0.0f);
  EXPECT_NEAR(exact_match_kl_loss(s0.data(), t.data(), m, one, 1.0f, 1.0, dz.data()), 0.0, 1e-7);
  for (float g : dz) EXPECT_NEAR(g, 0.0f, 1e-6);
  // The bucket's mass may be split any way among its student tokens.
  const VocabularyMatch m2 = VocabularyMatch::exact({"a", "c", "b", "e"}, {"b", "a", "x", "y"});
  const std::vector<float> s1 = {std::log(0.3f), std::log(0.1f), std::log(0.4f), std::log(0.2f)};
  EXPECT_NEAR(exact_match_kl_loss(s1.data(), t.data(), m2, one, 1.0f, 1.0, nullptr), 0.0, 1e-7);
}

TEST(ExactMatch, GradientMatchesFiniteDifferences) {
  const VocabularyMatch with_bucket = VocabularyMatch::exact(kStudentTokens, kTeacherTokens);
  // Every student token matched (a byte-level student of a BPE teacher): no bucket, the
  // teacher's unmatched mass dropped and the rest renormalized.
  const VocabularyMatch no_bucket = VocabularyMatch::exact({"b", "a"}, {"a", "xy", "b", "z"});
  for (float T : {1.0f, 2.5f}) {
    for (const VocabularyMatch* m : {&with_bucket, &no_bucket}) {
      const PairedRows p(m->student_vocab, m->teacher_vocab, uint64_t(m->student_vocab + T * 10));
      const std::string what =
          fmt::format("xkl Vs={} Vt={} T={}", m->student_vocab, m->teacher_vocab, T);
      expect_gradient_matches(p.student, [&](const float* z, float* dz) {
        return exact_match_kl_loss(z, p.teacher.data(), *m, p.rows, T, 0.7, dz);
      }, what);
    }
  }
  // Without a bucket the loss is the KL to the teacher renormalized over the matched tokens.
  const std::vector<float> t = {std::log(0.2f), std::log(0.5f), std::log(0.2f), std::log(0.1f)};
  const std::vector<float> s = {std::log(0.5f), std::log(0.5f)};  // b, a
  EXPECT_NEAR(exact_match_kl_loss(s.data(), t.data(), no_bucket, {{0, 0}}, 1.0f, 1.0, nullptr),
              0.0, 1e-7);
}

TEST(CrossTokenizerLossSpec, ParsesTermsAndRefusesPerTokenLosses) {
  const auto spec = CrossTokenizerLossSpec::parse("uld=1,xkl=0.5,ce=0.25", 2.0f);
  EXPECT_EQ(spec.uld, 1.0);
  EXPECT_EQ(spec.xkl, 0.5);
  EXPECT_EQ(spec.ce, 0.25);
  EXPECT_EQ(spec.describe(), "uld=1,xkl=0.5,ce=0.25 T=2");
  EXPECT_FALSE(CrossTokenizerLossSpec::parse("ce").needs_teacher());
  EXPECT_NE(error_of([] { CrossTokenizerLossSpec::parse("kl=0.5,ce=0.5"); })
                .find("term 'kl' compares the teacher's and the student's distributions token "
                      "by token, but their tokenizers differ; use uld and/or xkl"),
            std::string::npos);
  EXPECT_NE(error_of([] { CrossTokenizerLossSpec::parse("uld,wd=1"); })
                .find("unknown term 'wd' for cross-tokenizer distillation"),
            std::string::npos);
  EXPECT_NE(error_of([] { CrossTokenizerLossSpec::parse("uld=-1"); })
                .find("expected a number >= 0"),
            std::string::npos);
}

// "héllo wörld": h 0, é 1-2, l 3, l 4, o 5, ' ' 6, w 7, ö 8-9, r 10, l 11, d 12 (13 bytes).
const std::string kText = "h\xC3\xA9llo w\xC3\xB6rld";

TEST(TokenAlignment, ByteOffsetsOfAByteTokenization) {
  const ByteLevelTokenizer bytes;
  const TokenizedText t = tokenize_with_offsets(bytes, vocabulary_bytes(bytes), kText, "bytes");
  ASSERT_EQ(t.size(), 13u);
  for (int i = 0; i <= 13; i++) EXPECT_EQ(t.starts[i], i);
  // Token bytes that do not continue the text are refused, not misaligned.
  std::vector<std::string> wrong = vocabulary_bytes(bytes);
  wrong['w'] = "\xE2\x96\x81w";  // a SentencePiece-style "▁w"
  EXPECT_NE(error_of([&] { tokenize_with_offsets(bytes, wrong, kText, "the test tokenizer"); })
                .find("the test tokenizer (bytes tokenizer): token 7 (id 119) at byte 7 does not "
                      "decode to the text there"),
            std::string::npos);
}

TEST(TokenAlignment, HandCheckedPairs) {
  // Student "hé|llo| w|ö|rld": position i predicts the token at starts[i+1] = 3, 6, 8, 10.
  // Byte teacher: position j predicts byte j+1 (1..12).
  const std::vector<int64_t> student_next = {3, 6, 8, 10};
  std::vector<int64_t> byte_next(12);
  std::iota(byte_next.begin(), byte_next.end(), 1);
  auto pairs = align_by_next_token_start(student_next.data(), 4, 0, byte_next.data(), 12, 0);
  std::vector<std::pair<int, int>> got;
  for (AlignedRow r : pairs) got.emplace_back(r.student, r.teacher);
  EXPECT_EQ(got, (std::vector<std::pair<int, int>>{{0, 2}, {1, 5}, {2, 7}, {3, 9}}));
  // A BPE teacher "h|éll|o| wö|rld" (next 1, 5, 6, 10), rows offset, padding (-1) never paired.
  const std::vector<int64_t> bpe_next = {1, 5, 6, 10, -1, -1};
  pairs = align_by_next_token_start(student_next.data(), 4, 100, bpe_next.data(), 6, 200);
  got.clear();
  for (AlignedRow r : pairs) got.emplace_back(r.student, r.teacher);
  EXPECT_EQ(got, (std::vector<std::pair<int, int>>{{101, 202}, {103, 203}}));
}

std::string write_tiny_bpe(const fs::path& dir, const std::string& text, int vocab) {
  BpeTrainerOptions o;
  o.vocab_size = vocab;
  BpeTrainer trainer(o);
  trainer.add_text(text);
  save_bpe_tokenizer(trainer.train(), (dir / "tok").string());
  return (dir / "tok").string();
}

TEST(TokenAlignment, BpeAndByteTokenizationsOfUtf8Text) {
  const fs::path dir = temp_dir("xtok-align");
  std::string text;
  for (int i = 0; i < 40; i++) text += kText + (i % 3 ? " " : "\n") + "b\xC3\xA9n\xC3\xAF ";
  const auto bpe = load_tokenizer(write_tiny_bpe(dir, text, 300));
  const ByteLevelTokenizer bytes;
  const TokenizedText s = tokenize_with_offsets(*bpe, vocabulary_bytes(*bpe), kText, "bpe");
  const TokenizedText t = tokenize_with_offsets(bytes, vocabulary_bytes(bytes), kText, "bytes");
  // Trained on the text itself, BPE joins the multi-byte characters into fewer tokens, and each
  // token's bytes are the text at its offset.
  ASSERT_LT(s.size(), 8u);
  ASSERT_EQ(s.starts.front(), 0);
  ASSERT_EQ(s.starts.back(), 13);
  for (size_t i = 0; i < s.size(); i++)
    EXPECT_EQ(kText.substr(s.starts[i], s.starts[i + 1] - s.starts[i]), bpe->decode({s.ids[i]}));
  // The pairs are exactly the positions whose next tokens start at the same byte.
  std::vector<int64_t> sn(s.starts.begin() + 1, s.starts.end() - 1);
  std::vector<int64_t> tn(t.starts.begin() + 1, t.starts.end() - 1);
  const auto pairs =
      align_by_next_token_start(sn.data(), int(sn.size()), 0, tn.data(), int(tn.size()), 0);
  size_t k = 0;
  for (int i = 0; i < int(sn.size()); i++)
    for (int j = 0; j < int(tn.size()); j++)
      if (sn[i] == tn[j]) {
        ASSERT_LT(k, pairs.size());
        EXPECT_EQ(pairs[k].student, i);
        EXPECT_EQ(pairs[k].teacher, j);
        k++;
      }
  EXPECT_EQ(k, pairs.size());
  EXPECT_EQ(pairs.size(), sn.size());  // every student boundary is a byte boundary
}


// A small text in verses, with multi-byte characters.
std::string write_corpus(const fs::path& dir) {
  const char* subjects[] = {"the king", "a shepherd", "the people", "my son", "the prophet"};
  const char* verbs[] = {"went unto", "spake to", "blessed", "saw", "followed"};
  const char* objects[] = {"the city", "the river", "his brethren", "Jérusalem", "the field"};
  Rng rng(42);
  std::string text;
  while (text.size() < 40000) {
    text += std::string(subjects[rng.below(5)]) + " " + verbs[rng.below(5)] + " " +
            objects[rng.below(5)] + (rng.below(3) == 0 ? ".\n" : ", and ");
  }
  std::ofstream(dir / "corpus.txt") << text;
  return (dir / "corpus.txt").string();
}

DistillTrainOptions small_run(const std::string& teacher, const std::string& corpus,
                              const std::string& student_tokenizer, const fs::path& out) {
  DistillTrainOptions o;
  o.teacher = teacher;
  o.data = {corpus};
  o.student_tokenizer = student_tokenizer;
  o.student_preset = "gpt2-tiny";
  o.loss = "uld=1,xkl=1,ce=1";
  o.loop.out = out.string();
  o.loop.seq_len = 32;
  o.loop.batch_size = 4;
  o.loop.steps = 30;
  o.loop.warmup = 3;
  o.loop.lr = 3e-3f;
  o.loop.eval_every = 10;
  o.loop.eval_batches = 2;
  o.loop.save_every = 0;
  return o;
}

// A BPE student of a byte-level teacher: aligned positions, every term learns, held-out loss
// falls; the saved student carries its tokenizer and fingerprint.
TEST(CrossTokenizerTrain, BpeStudentOfAByteTeacherLearns) {
  const fs::path dir = temp_dir("xtok-train");
  const std::string corpus = write_corpus(dir);
  const std::string tok = write_tiny_bpe(dir, read_file_text(corpus), 320);
  const std::string teacher = test_support::save_tiny_teacher(dir);
  const DistillTrainOptions o = small_run(teacher, corpus, tok, dir / "run");
  std::vector<float> val;
  std::vector<double> aligned;
  distill_train(o, [&](const TrainProgress& p) {
    if (p.kind != TrainProgress::Kind::Step) return;
    if (p.val_loss) val.push_back(*p.val_loss);
    aligned.push_back(p.details.at("aligned").get<double>());
    for (const char* term : {"loss_uld", "loss_xkl", "loss_ce"})
      EXPECT_GT(p.details.at(term).get<double>(), 0.0) << term;
  });
  ASSERT_EQ(val.size(), 3u);
  EXPECT_LT(val.back(), val.front() - 0.1f);
  // With byte-level teacher tokens every student boundary is a teacher boundary: all student
  // positions are aligned while the teacher's window covers them (it covers them all on
  // average, with 10% to spare).
  for (double a : aligned) {
    EXPECT_GT(a, 0.8);
    EXPECT_LE(a, 1.0);
  }
  const std::string student = (dir / "run" / "model").string();
  const auto bpe = load_tokenizer(tok);
  EXPECT_TRUE(fs::exists(fs::path(student) / "tokenizer.json"));
  EXPECT_EQ(load_model_dir(student)->config().vocab_size, 320);
  EXPECT_EQ(load_model_tokenizer(student)->fingerprint(), bpe->fingerprint());
  EXPECT_EQ(model_tokenizer_fingerprint(student), bpe->fingerprint());
}

// The other way: a byte-level student of a BPE teacher (every student token matches a teacher
// token: exact-match KL has no bucket).
TEST(CrossTokenizerTrain, ByteStudentOfABpeTeacher) {
  const fs::path dir = temp_dir("xtok-byte-student");
  const std::string corpus = write_corpus(dir);
  const std::string tok = write_tiny_bpe(dir, read_file_text(corpus), 300);
  ModelConfig c = model_preset("gpt2-tiny");
  c.vocab_size = 300;
  Model m(c);
  m.init_weights(3);
  SaveModelOptions save;
  save.files = model_tokenizer_files(tok);
  save.metadata = {{"distill_tokenizer", load_tokenizer(tok)->fingerprint()}};
  save_model_dir(m, (dir / "teacher").string(), save);
  DistillTrainOptions o = small_run((dir / "teacher").string(), corpus, "byte", dir / "run");
  o.loop.steps = 4;
  o.loop.eval_every = 2;
  std::vector<float> val;
  double aligned = 0.0;
  distill_train(o, [&](const TrainProgress& p) {
    if (p.kind != TrainProgress::Kind::Step) return;
    if (p.val_loss) val.push_back(*p.val_loss);
    aligned = p.details.at("aligned").get<double>();
  });
  ASSERT_EQ(val.size(), 2u);
  EXPECT_TRUE(std::isfinite(val.back()));
  // Only the byte positions where a teacher token ends are aligned.
  EXPECT_GT(aligned, 0.1);
  EXPECT_LT(aligned, 0.9);
  const std::string student = (dir / "run" / "model").string();
  EXPECT_EQ(load_model_dir(student)->config().vocab_size, 256);
  EXPECT_EQ(load_model_tokenizer(student)->kind(), "bytes");
  EXPECT_FALSE(fs::exists(fs::path(student) / "tokenizer.json"));
}

// Resuming from a checkpoint gives the same step losses as a run that never stopped (the task
// keeps no state between steps but its deterministic held-out windows).
TEST(CrossTokenizerTrain, ResumeIsBitIdentical) {
  const fs::path dir = temp_dir("xtok-resume");
  const std::string corpus = write_corpus(dir);
  const std::string tok = write_tiny_bpe(dir, read_file_text(corpus), 300);
  const std::string teacher = test_support::save_tiny_teacher(dir);
  auto run = [&](const fs::path& out, int stop_after, bool resume) {
    DistillTrainOptions o = small_run(teacher, corpus, tok, out);
    o.loop.steps = 6;
    o.loop.seq_len = 16;
    o.loop.batch_size = 2;
    o.loop.eval_every = 3;
    o.loop.save_every = 3;
    o.loop.stop_after = stop_after;
    o.loop.resume = resume;
    std::vector<std::pair<int64_t, float>> losses;
    distill_train(o, [&](const TrainProgress& p) {
      if (p.kind == TrainProgress::Kind::Step) losses.emplace_back(p.step, p.loss);
    });
    return losses;
  };
  const auto straight = run(dir / "straight", 0, false);
  auto split = run(dir / "split", 3, false);
  const auto rest = run(dir / "split", 0, true);
  split.insert(split.end(), rest.begin(), rest.end());
  ASSERT_EQ(straight.size(), 6u);
  EXPECT_EQ(straight, split);
}

TEST(CrossTokenizerCli, TrainsAndRefusesPerTokenLosses) {
  const fs::path dir = temp_dir("xtok-cli");
  const std::string corpus = write_corpus(dir);
  const std::string tok = write_tiny_bpe(dir, read_file_text(corpus), 300);
  const std::string teacher = test_support::save_tiny_teacher(dir);
  const std::string common = "train --teacher " + teacher + " --data " + corpus +
                             " --student-tokenizer " + tok + " --student-preset gpt2-tiny" +
                             " --steps 2 --seq-len 32 --batch-size 2 --eval-every 2";
  auto r = test_support::run_cli(common + " --loss uld=1,ce=1 --out " + (dir / "a").string(), dir);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir / "a" / "model" / "tokenizer.json"));
  EXPECT_EQ(model_tokenizer_fingerprint((dir / "a" / "model").string()),
            load_tokenizer(tok)->fingerprint());

  r = test_support::run_cli(common + " --loss kl --out " + (dir / "b").string(), dir);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("term 'kl' compares the teacher's and the student's distributions token "
                       "by token, but their tokenizers differ; use uld and/or xkl"),
            std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_FALSE(fs::exists(dir / "b" / "model"));

  // The student tokenizer equal to the teacher's is plain distillation (kl is fine).
  r = test_support::run_cli("train --teacher " + teacher + " --data " + corpus +
                            " --student-tokenizer byte --student-preset gpt2-tiny --loss kl"
                            " --steps 1 --seq-len 16 --batch-size 2 --out " +
                            (dir / "c").string(), dir);
  EXPECT_EQ(r.status, 0) << r.err;
}

}  // namespace
}  // namespace distill
