#include "distill/prune.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/error.h"
#include "core/file.h"
#include "core/rng.h"
#include "data/text_corpus.h"
#include "formats/model_dir.h"
#include "formats/safetensors.h"
#include "tokenizer/byte_tokenizer_adapter.h"
#include "tokenizer/tokenizer.h"
#include "train/distill_train.h"

namespace distill {
namespace {

using json = nlohmann::json;

// The student's width: heads, MLP channels and embedding channels (the teacher's where unset).
struct Width {
  int heads, ffn, hidden;
};

// GPT-2 computes attention at width n_embd = n_head * head_dim, so pruning heads (head_dim
// stays) prunes embedding channels with them and the other way round.
Width resolve_width(const ModelConfig& c, const PruneOptions& o) {
  Width w{o.heads.value_or(c.num_heads), o.ffn.value_or(c.intermediate_size),
          o.hidden.value_or(c.hidden_size)};
  if (c.arch != Arch::Gpt2 || (!o.heads && !o.hidden)) return w;
  if (o.hidden && *o.hidden % c.head_dim != 0)
    throw Error("--hidden {}: gpt2 attends at width n_embd = heads * head_dim ({}), so --hidden "
                "must be a multiple of {}", *o.hidden, c.head_dim, c.head_dim);
  if (o.heads && o.hidden && *o.hidden != *o.heads * c.head_dim)
    throw Error("--heads {} and --hidden {}: gpt2 attends at width n_embd, so --hidden must be "
                "heads * head_dim = {}", *o.heads, *o.hidden, *o.heads * c.head_dim);
  if (o.heads) w.hidden = *o.heads * c.head_dim;
  if (o.hidden) w.heads = *o.hidden / c.head_dim;
  return w;
}

// The teacher layers --drop-layers leaves, in order.
std::vector<int> layers_after_dropping(const std::string& text, int num_layers) {
  std::vector<int> dropped;
  try {
    dropped = parse_layer_list(text, num_layers);
  } catch (const Error&) {
    throw Error("--drop-layers '{}': expected increasing layer indices of the teacher (0..{}), "
                "separated by commas", text, num_layers - 1);
  }
  std::vector<int> kept;
  for (int l = 0; l < num_layers; l++)
    if (!std::binary_search(dropped.begin(), dropped.end(), l)) kept.push_back(l);
  if (kept.empty())
    throw Error("--drop-layers '{}' drops all {} layers of the teacher", text, num_layers);
  return kept;
}

// Indices of the k largest scores, increasing; ties keep the lower index.
std::vector<int> top_k(const std::vector<double>& scores, int k) {
  std::vector<int> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return scores[a] > scores[b]; });
  order.resize(size_t(k));
  std::sort(order.begin(), order.end());
  return order;
}

// What each dimension of a tensor (our layout) is indexed by.
enum class Axis {
  All,      // kept whole: vocabulary, positions, head_dim
  Hidden,   // embedding channels
  QHeads,   // query heads * head_dim (the heads of the kept kv groups)
  KvHeads,  // key/value heads * head_dim
  Ffn,      // MLP channels
  Gpt2Qkv,  // gpt2's fused c_attn rows: q | k | v, each n_embd = heads * head_dim
};

struct TensorAxes {
  Axis rows, cols;  // cols: unused for 1-D tensors
};

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

TensorAxes tensor_axes(const std::string& name, Arch arch) {
  using A = Axis;
  struct Rule {
    const char* suffix;
    TensorAxes axes;
  };
  static const std::vector<Rule> gpt2 = {
      {"wte.weight", {A::All, A::Hidden}},       {"wpe.weight", {A::All, A::Hidden}},
      {"attn.c_attn.weight", {A::Gpt2Qkv, A::Hidden}}, {"attn.c_attn.bias", {A::Gpt2Qkv, A::All}},
      {"attn.c_proj.weight", {A::Hidden, A::QHeads}},  {"attn.c_proj.bias", {A::Hidden, A::All}},
      {"mlp.c_fc.weight", {A::Ffn, A::Hidden}},  {"mlp.c_fc.bias", {A::Ffn, A::All}},
      {"mlp.c_proj.weight", {A::Hidden, A::Ffn}}, {"mlp.c_proj.bias", {A::Hidden, A::All}},
      {"ln_1.weight", {A::Hidden, A::All}},      {"ln_1.bias", {A::Hidden, A::All}},
      {"ln_2.weight", {A::Hidden, A::All}},      {"ln_2.bias", {A::Hidden, A::All}},
      {"ln_f.weight", {A::Hidden, A::All}},      {"ln_f.bias", {A::Hidden, A::All}},
  };
  static const std::vector<Rule> llama = {
      {"embed_tokens.weight", {A::All, A::Hidden}}, {"lm_head.weight", {A::All, A::Hidden}},
      {"q_proj.weight", {A::QHeads, A::Hidden}},    {"q_proj.bias", {A::QHeads, A::All}},
      {"k_proj.weight", {A::KvHeads, A::Hidden}},   {"k_proj.bias", {A::KvHeads, A::All}},
      {"v_proj.weight", {A::KvHeads, A::Hidden}},   {"v_proj.bias", {A::KvHeads, A::All}},
      {"o_proj.weight", {A::Hidden, A::QHeads}},    {"o_proj.bias", {A::Hidden, A::All}},
      {"q_norm.weight", {A::All, A::All}},          {"k_norm.weight", {A::All, A::All}},
      {"gate_proj.weight", {A::Ffn, A::Hidden}},    {"gate_proj.bias", {A::Ffn, A::All}},
      {"up_proj.weight", {A::Ffn, A::Hidden}},      {"up_proj.bias", {A::Ffn, A::All}},
      {"down_proj.weight", {A::Hidden, A::Ffn}},    {"down_proj.bias", {A::Hidden, A::All}},
      {"input_layernorm.weight", {A::Hidden, A::All}},
      {"post_attention_layernorm.weight", {A::Hidden, A::All}},
      {"model.norm.weight", {A::Hidden, A::All}},
  };
  for (const Rule& r : arch == Arch::Gpt2 ? gpt2 : llama)
    if (ends_with(name, r.suffix)) return r.axes;
  throw Error("prune: no rule for slicing tensor '{}'", name);
}

// "model.layers.7.mlp..." / "transformer.h.7...." -> 7; -1 for tensors outside the layers.
int layer_index(const std::string& name) {
  for (const char* p : {"model.layers.", "transformer.h."})
    if (name.rfind(p, 0) == 0) return std::stoi(name.substr(std::strlen(p)));
  return -1;
}

// The source indices along `axis` of a tensor of layer `l` with `n` entries there; `c` is the
// source config (the teacher's, depth already pruned).
std::vector<int> axis_indices(Axis axis, int64_t n, int l, const PrunePlan& plan,
                              const ModelConfig& c) {
  const int HD = c.head_dim, group = c.num_heads / c.num_kv_heads;
  std::vector<int> idx;
  auto heads = [&](int offset) {
    for (int g : plan.kv_heads.at(size_t(l)))
      for (int h = g * group; h < (g + 1) * group; h++)
        for (int d = 0; d < HD; d++) idx.push_back(offset + h * HD + d);
  };
  switch (axis) {
    case Axis::All:
      idx.resize(size_t(n));
      std::iota(idx.begin(), idx.end(), 0);
      break;
    case Axis::Hidden:
      idx = plan.hidden;
      break;
    case Axis::QHeads:
      heads(0);
      break;
    case Axis::KvHeads:
      for (int g : plan.kv_heads.at(size_t(l)))
        for (int d = 0; d < HD; d++) idx.push_back(g * HD + d);
      break;
    case Axis::Ffn:
      idx = plan.ffn.at(size_t(l));
      break;
    case Axis::Gpt2Qkv:
      for (int part = 0; part < 3; part++) heads(part * c.hidden_size);
      break;
  }
  return idx;
}

}  // namespace

namespace {

// The target shape alone (what plan_pruning needs).
void check_target_shape(const ModelConfig& c, const PruneOptions& o) {
  if (o.layers && !o.drop_layers.empty())
    throw Error("choose --layers or --drop-layers, not both");
  if (o.layers && (*o.layers < 1 || *o.layers > c.num_layers))
    throw Error("--layers {}: keep between 1 and the teacher's {} layers", *o.layers,
                c.num_layers);
  if (!o.drop_layers.empty()) layers_after_dropping(o.drop_layers, c.num_layers);
  const int group = c.num_heads / c.num_kv_heads;
  if (o.heads && (*o.heads < 1 || *o.heads > c.num_heads))
    throw Error("--heads {}: keep between 1 and the teacher's {} attention heads per layer",
                *o.heads, c.num_heads);
  if (o.heads && *o.heads % group != 0)
    throw Error("--heads {}: the teacher groups {} query heads per key/value head ({} heads, {} "
                "key/value heads) and whole groups are pruned, so --heads must be a multiple of "
                "{}", *o.heads, group, c.num_heads, c.num_kv_heads, group);
  if (o.ffn && (*o.ffn < 1 || *o.ffn > c.intermediate_size))
    throw Error("--ffn {}: keep between 1 and the teacher's {} MLP channels", *o.ffn,
                c.intermediate_size);
  if (o.hidden && (*o.hidden < 1 || *o.hidden > c.hidden_size))
    throw Error("--hidden {}: keep between 1 and the teacher's {} embedding channels", *o.hidden,
                c.hidden_size);
  resolve_width(c, o);  // gpt2's heads/hidden coupling
}

}  // namespace

void check_prune_target(const ModelConfig& c, const PruneOptions& o) {
  if (o.data.empty()) throw Error("prune needs --data: calibration text files");
  if (o.out.empty()) throw Error("prune needs --out: the output model directory");
  if (o.calib_tokens < 1 || o.seq_len < 1 || o.batch_size < 1)
    throw Error("--calib-tokens ({}), --seq-len ({}) and --batch-size ({}) must be positive",
                o.calib_tokens, o.seq_len, o.batch_size);
  if (c.arch == Arch::Gpt2 && o.seq_len > c.max_position)
    throw Error("--seq-len {} exceeds the teacher's n_positions {}", o.seq_len, c.max_position);
  check_target_shape(c, o);
}

PruneImportance measure_importance(Model& teacher, const TextCorpus& corpus,
                                   const PruneOptions& o,
                                   const std::function<void(int64_t, int64_t)>& progress) {
  const ModelConfig& c = teacher.config();
  const int L = c.num_layers, C = c.hidden_size, NH = c.num_heads, HD = c.head_dim,
            F = c.intermediate_size, T = o.seq_len;
  const int64_t windows = (int64_t(o.calib_tokens) + T - 1) / T, total = windows * T;
  // Per-layer sums over tokens, so that layers accumulate in parallel.
  std::vector<double> cos_sum(size_t(L), 0.0);
  const auto zeros = [L](int n) {
    return std::vector<std::vector<double>>(size_t(L), std::vector<double>(size_t(n), 0.0));
  };
  std::vector<std::vector<double>> head_sum = zeros(NH), ffn_sum = zeros(F), hidden_sum = zeros(C);
  Rng rng(o.seed);
  std::vector<int32_t> ids, targets;
  teacher.set_checkpointing(false);  // layer_activations need every layer's buffers
  for (int64_t w0 = 0; w0 < windows; w0 += o.batch_size) {
    const int B = int(std::min<int64_t>(o.batch_size, windows - w0));
    const int64_t N = int64_t(B) * T;
    ids.resize(size_t(N));
    targets.resize(size_t(N));
    corpus.sample_train(rng, B, T, ids.data(), targets.data());
    teacher.forward(ids.data(), B, T);
#pragma omp parallel for schedule(dynamic)
    for (int l = 0; l < L; l++) {
      const float* h0 = teacher.hidden(l);
      const float* h1 = teacher.hidden(l + 1);
      const LayerActivations a = teacher.layer_activations(l);
      double* hs = hidden_sum[size_t(l)].data();
      double* fs = ffn_sum[size_t(l)].data();
      for (int64_t n = 0; n < N; n++) {
        const float* x = h0 + n * C;
        const float* y = h1 + n * C;
        double dot = 0, xx = 0, yy = 0;
        for (int i = 0; i < C; i++) {
          dot += double(x[i]) * y[i];
          xx += double(x[i]) * x[i];
          yy += double(y[i]) * y[i];
        }
        // A zero row has no direction: the same as its image only when that is zero too.
        cos_sum[size_t(l)] += xx > 0 && yy > 0 ? dot / std::sqrt(xx * yy) : (xx == yy ? 1 : 0);
        const float* heads = a.heads + n * NH * HD;
        for (int h = 0; h < NH; h++) {
          double sq = 0;
          for (int d = 0; d < HD; d++) sq += double(heads[h * HD + d]) * heads[h * HD + d];
          head_sum[size_t(l)][size_t(h)] += sq;
        }
        const float* act = a.mlp_act + n * F;
        for (int f = 0; f < F; f++) fs[f] += std::fabs(act[f]);
        const float* ai = a.attn_in + n * C;
        const float* mi = a.mlp_in + n * C;
        for (int i = 0; i < C; i++) hs[i] += std::fabs(ai[i]) + std::fabs(mi[i]);
      }
    }
    if (progress) progress((w0 + B) * T, total);
  }
  PruneImportance imp;
  imp.tokens = total;
  const double inv = 1.0 / double(total);
  imp.hidden.assign(size_t(C), 0.0);
  for (int l = 0; l < L; l++) {
    imp.block_influence.push_back(1.0 - cos_sum[size_t(l)] * inv);
    std::vector<double> heads(static_cast<size_t>(NH)), ffn(static_cast<size_t>(F));
    for (int h = 0; h < NH; h++) heads[size_t(h)] = std::sqrt(head_sum[size_t(l)][size_t(h)] * inv);
    for (int f = 0; f < F; f++) ffn[size_t(f)] = ffn_sum[size_t(l)][size_t(f)] * inv;
    for (int i = 0; i < C; i++) imp.hidden[size_t(i)] += hidden_sum[size_t(l)][size_t(i)] * inv;
    imp.heads.push_back(std::move(heads));
    imp.ffn.push_back(std::move(ffn));
  }
  return imp;
}

PrunePlan plan_pruning(const ModelConfig& c, const PruneImportance& imp, const PruneOptions& o) {
  check_target_shape(c, o);
  DISTILL_CHECK(imp.block_influence.size() == size_t(c.num_layers));
  PrunePlan p;
  if (o.layers) {
    p.layers = top_k(imp.block_influence, *o.layers);
  } else if (!o.drop_layers.empty()) {
    p.layers = layers_after_dropping(o.drop_layers, c.num_layers);
  } else {
    p.layers.resize(size_t(c.num_layers));
    std::iota(p.layers.begin(), p.layers.end(), 0);
  }
  const Width w = resolve_width(c, o);
  const int group = c.num_heads / c.num_kv_heads;
  for (int l : p.layers) {
    // A key/value group's importance is the sum of its query heads'.
    std::vector<double> groups(size_t(c.num_kv_heads), 0.0);
    for (int h = 0; h < c.num_heads; h++) groups[size_t(h / group)] += imp.heads[size_t(l)][size_t(h)];
    p.kv_heads.push_back(top_k(groups, w.heads / group));
    p.ffn.push_back(top_k(imp.ffn[size_t(l)], w.ffn));
  }
  p.hidden = top_k(imp.hidden, w.hidden);
  p.config = config_keeping_layers(c, p.layers);
  p.config.num_heads = w.heads;
  p.config.num_kv_heads = w.heads / group;
  p.config.intermediate_size = w.ffn;
  p.config.hidden_size = w.hidden;
  p.config.validate("the pruned config");
  return p;
}

std::unique_ptr<Model> apply_pruning(const Model& teacher, const PrunePlan& plan) {
  const ModelConfig& t = teacher.config();
  // Depth first, with the layer-subset copy `distill train --init-from-teacher` uses; then the
  // plan's per-layer lists index the kept layers in order.
  std::unique_ptr<Model> shallow;
  const Model* src = &teacher;
  if (plan.layers.size() != size_t(t.num_layers)) {
    shallow = std::make_unique<Model>(config_keeping_layers(t, plan.layers), false);
    copy_kept_layers(teacher, *shallow, plan.layers);
    src = shallow.get();
  }
  const ModelConfig& c = src->config();
  auto student = std::make_unique<Model>(plan.config, false);
  for (const ParamSpec& s : student->param_specs()) {
    const ParamSpec* from = src->find_param(s.name);
    if (!from) throw Error("prune: the teacher has no tensor '{}'", s.name);
    const TensorAxes axes = tensor_axes(s.name, c.arch);
    const int l = layer_index(s.name);
    const std::vector<int> rows = axis_indices(axes.rows, from->shape[0], l, plan, c);
    const bool matrix = from->shape.size() == 2;
    const int64_t from_cols = matrix ? from->shape[1] : 1;
    const std::vector<int> cols =
        matrix ? axis_indices(axes.cols, from_cols, l, plan, c) : std::vector<int>{0};
    DISTILL_CHECK(int64_t(rows.size()) == s.shape[0]);
    DISTILL_CHECK(!matrix || int64_t(cols.size()) == s.shape[1]);
    const float* in = src->params() + from->offset;
    float* out = student->params() + s.offset;
    for (size_t i = 0; i < rows.size(); i++)
      for (size_t j = 0; j < cols.size(); j++)
        out[i * cols.size() + j] = in[int64_t(rows[i]) * from_cols + cols[j]];
  }
  return student;
}

namespace {

json prune_json(const PruneOptions& o, const PruneResult& r) {
  const PrunePlan& p = r.plan;
  const int group = r.teacher.num_heads / r.teacher.num_kv_heads;
  json heads = json::array();
  for (const std::vector<int>& kv : p.kv_heads) {
    std::vector<int> q;
    for (int g : kv)
      for (int h = g * group; h < (g + 1) * group; h++) q.push_back(h);
    heads.push_back(q);
  }
  json j;
  j["teacher"] = o.teacher;
  j["calibration"] = {{"data", o.data}, {"tokens", r.importance.tokens},
                      {"seq_len", o.seq_len}, {"seed", o.seed}};
  j["importance"] = {
      {"block_influence", r.importance.block_influence},
      {"heads", r.importance.heads},
      {"ffn", r.importance.ffn},
      {"hidden", r.importance.hidden},
      {"definitions",
       {{"block_influence", "1 - mean over tokens of cos(layer input, layer output)"},
        {"heads", "sqrt(mean over tokens of ||head output before o_proj||^2)"},
        {"ffn", "mean over tokens of |down projection input|"},
        {"hidden", "sum over layers of mean |attention-norm output| + mean |mlp-norm output|"}}}};
  j["kept"] = {{"layers", p.layers}, {"kv_heads", p.kv_heads}, {"heads", heads},
               {"ffn", p.ffn}, {"hidden", p.hidden}};
  j["teacher_config"] = r.teacher.to_json();
  j["student_config"] = r.student.to_json();
  j["teacher_params"] = r.teacher_params;
  j["student_params"] = r.student_params;
  return j;
}

}  // namespace

PruneResult prune(const PruneOptions& o,
                  const std::function<void(int64_t, int64_t)>& progress) {
  if (o.teacher.empty()) throw Error("prune needs --teacher: the teacher model directory");
  PruneResult r;
  r.teacher = ModelConfig::from_file(o.teacher + "/config.json");
  check_prune_target(r.teacher, o);
  std::unique_ptr<Model> teacher = load_model_dir(o.teacher);
  // The teacher's tokens: its tokenizer files, or bytes for a model without any.
  std::unique_ptr<Tokenizer> tokenizer;
  if (!model_tokenizer_files(o.teacher).empty()) tokenizer = load_tokenizer(o.teacher);
  const TextCorpus corpus = TextCorpus::load(o.data, 0.0, o.seq_len + 1, tokenizer.get());
  r.importance = measure_importance(*teacher, corpus, o, progress);
  r.plan = plan_pruning(r.teacher, r.importance, o);
  r.student = r.plan.config;
  r.teacher_params = r.teacher.num_parameters();
  r.student_params = r.student.num_parameters();
  const std::unique_ptr<Model> student = apply_pruning(*teacher, r.plan);
  teacher.reset();
  SaveModelOptions save;
  save.metadata = SafetensorsModel::open(o.teacher).metadata();  // distill_tokenizer
  save.files = model_tokenizer_files(o.teacher);
  save_model_dir(*student, o.out, save);
  write_file_atomic(o.out + "/prune.json", prune_json(o, r).dump(1) + "\n");
  return r;
}

}  // namespace distill
