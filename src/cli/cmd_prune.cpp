// distill prune: cut a smaller student out of a teacher (layers, heads, MLP and embedding
// channels ranked by calibration activations) and print the importance table.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <memory>

#include "cli/progress.h"
#include "cli/verbs.h"
#include "distill/prune.h"

namespace distill::cli {

namespace {

// "0.91 0.88 [0.02]": the scores, those not kept in brackets.
std::string marked_scores(const std::vector<double>& scores, const std::vector<int>& kept) {
  std::string s;
  for (size_t i = 0; i < scores.size(); i++) {
    const bool k = std::binary_search(kept.begin(), kept.end(), int(i));
    const std::string v = fmt::format("{:.3g}", scores[i]);
    s += (i ? " " : "") + (k ? v : "[" + v + "]");
  }
  return s;
}

// The lowest kept and highest dropped score: how clear the cut was.
std::string cut(const std::vector<double>& scores, const std::vector<int>& kept) {
  double kept_min = 1e300, dropped_max = -1e300;
  for (size_t i = 0; i < scores.size(); i++) {
    if (std::binary_search(kept.begin(), kept.end(), int(i)))
      kept_min = std::min(kept_min, scores[i]);
    else
      dropped_max = std::max(dropped_max, scores[i]);
  }
  if (kept.size() == scores.size()) return fmt::format("all kept (min {:.3g})", kept_min);
  return fmt::format("kept min {:.3g}, dropped max {:.3g}", kept_min, dropped_max);
}

void print_result(const PruneOptions& o, const PruneResult& r) {
  const ModelConfig &t = r.teacher, &s = r.student;
  const PrunePlan& p = r.plan;
  const int group = t.num_heads / t.num_kv_heads;
  std::printf("calibration: %s tokens in windows of %d\n", format_count(double(r.importance.tokens)).c_str(),
              o.seq_len);
  std::printf("%5s  %8s  %4s  %-9s  %s\n", "layer", "BI", "kept", "mlp kept", "head importance ([dropped])");
  for (int l = 0; l < t.num_layers; l++) {
    const auto it = std::find(p.layers.begin(), p.layers.end(), l);
    const bool kept = it != p.layers.end();
    std::string heads = marked_scores(r.importance.heads[size_t(l)], {}), mlp = "-";
    if (kept) {
      const size_t k = size_t(it - p.layers.begin());
      std::vector<int> q;
      for (int g : p.kv_heads[k])
        for (int h = g * group; h < (g + 1) * group; h++) q.push_back(h);
      heads = marked_scores(r.importance.heads[size_t(l)], q);
      mlp = fmt::format("{}/{}", p.ffn[k].size(), t.intermediate_size);
    }
    std::printf("%5d  %8.4f  %4s  %-9s  %s\n", l, r.importance.block_influence[size_t(l)],
                kept ? "yes" : "no", mlp.c_str(), heads.c_str());
  }
  for (size_t k = 0; k < p.layers.size(); k++)
    if (p.ffn[k].size() != size_t(t.intermediate_size))
      std::printf("mlp channels, layer %d: %s\n", p.layers[k],
                  cut(r.importance.ffn[size_t(p.layers[k])], p.ffn[k]).c_str());
  std::printf("embedding channels: %zu/%d, %s\n", p.hidden.size(), t.hidden_size,
              cut(r.importance.hidden, p.hidden).c_str());
  std::printf("shape: layers %d -> %d, heads %d -> %d (kv %d -> %d), mlp %d -> %d, hidden %d -> %d\n",
              t.num_layers, s.num_layers, t.num_heads, s.num_heads, t.num_kv_heads,
              s.num_kv_heads, t.intermediate_size, s.intermediate_size, t.hidden_size,
              s.hidden_size);
  std::printf("parameters: %s -> %s (%.1f%%)\n", format_count(double(r.teacher_params)).c_str(),
              format_count(double(r.student_params)).c_str(),
              100.0 * double(r.student_params) / double(r.teacher_params));
  std::printf("wrote %s (config.json, model.safetensors, prune.json)\n", o.out.c_str());
}

}  // namespace

VerbRun add_prune(CLI::App& app) {
  auto o = std::make_shared<PruneOptions>();
  auto layers = std::make_shared<int>(0), heads = std::make_shared<int>(0),
       ffn = std::make_shared<int>(0), hidden = std::make_shared<int>(0);
  app.add_option("--teacher", o->teacher, "teacher model directory")->required();
  app.add_option("--data", o->data, "calibration text files (in the teacher's tokens)");
  app.add_option("--out", o->out, "output model directory (also gets prune.json)");
  app.add_option("--calib-tokens", o->calib_tokens, "calibration tokens");
  app.add_option("--seq-len", o->seq_len, "tokens per calibration window");
  app.add_option("--batch-size", o->batch_size, "windows per forward pass");
  app.add_option("--seed", o->seed, "seed choosing the calibration windows");
  CLI::Option* layers_opt = app.add_option(
      "--layers", *layers, "keep this many layers, those of highest block influence");
  app.add_option("--drop-layers", o->drop_layers, "or drop exactly these layers, e.g. 3,4");
  CLI::Option* heads_opt = app.add_option(
      "--heads", *heads, "attention heads per layer (GQA: a multiple of heads per kv head)");
  CLI::Option* ffn_opt = app.add_option("--ffn", *ffn, "MLP intermediate channels per layer");
  CLI::Option* hidden_opt = app.add_option(
      "--hidden", *hidden, "embedding channels (gpt2: heads * head_dim, set with --heads)");
  return [=]() {
    // Unset options keep the teacher's shape; given ones are checked by the library (0 too).
    if (layers_opt->count()) o->layers = *layers;
    if (heads_opt->count()) o->heads = *heads;
    if (ffn_opt->count()) o->ffn = *ffn;
    if (hidden_opt->count()) o->hidden = *hidden;
    std::unique_ptr<ProgressBar> bar;
    const PruneResult r = prune(*o, [&](int64_t done, int64_t total) {
      if (!bar) bar = std::make_unique<ProgressBar>(long(total));
      bar->update(long(done), fmt::format("calibration {}/{} tokens", format_count(double(done)),
                                          format_count(double(total))));
      if (done == total) bar->finish();
    });
    print_result(*o, r);
    return 0;
  };
}

}  // namespace distill::cli
