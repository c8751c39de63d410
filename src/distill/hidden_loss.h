// Hidden-state and attention distillation. Hidden states: (FitNets, Romero et al. 2015; TinyBERT, Jiao et al. 2020; DistillKit's
// hidden-state mode): the student's residual stream at chosen layer boundaries is pulled towards
// the teacher's at mapped boundaries, through a learned linear projection when the widths differ.
//
// Per position n with mask weight w_n, student state s (Cs), teacher state t (Ct), u = W s (W is
// (Ct, Cs), or the identity when Cs == Ct):
//   mse     (1 / Ct) * sum_c (u_c - t_c)^2
//   cosine  1 - u.t / (|u| |t|)     (scale-free: the residual streams of teacher and student may
//                                    differ in scale by orders of magnitude)
// summed over positions as w_n * loss_n / normalizer (the step's target positions, as in
// distill/losses.h), and averaged over the mapped pairs by the caller.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace distill {

enum class HiddenLossKind { MSE, Cosine };
HiddenLossKind parse_hidden_loss(const std::string& name);  // "mse" | "cosine"
const char* hidden_loss_name(HiddenLossKind kind);

// Student boundary -> teacher boundary pairs (0 = embeddings, L = the last layer's output; see
// Model::hidden). "uniform": student boundary i in 1..Ls maps to teacher boundary
// round(i * Lt / Ls). Otherwise "s:t,s:t,..." with each student boundary at most once.
std::vector<std::pair<int, int>> parse_layer_map(const std::string& text, int student_layers,
                                                 int teacher_layers);
// Student layer -> teacher layer pairs for attention distillation (0-based layer indices):
// "last" pairs the last layers; otherwise "s:t,..." with each student layer at most once.
std::vector<std::pair<int, int>> parse_attention_layers(const std::string& text,
                                                        int student_layers, int teacher_layers);

// Loss of one mapped pair over N positions: student states hs (N,Cs), teacher states ht (N,Ct),
// projection W (Ct,Cs) or null (then Cs == Ct). Returns sum_n w_n * loss_n / normalizer.
// When dhs / dW are non-null, ACCUMULATES d(loss)/d(hs) (N,Cs) and d(loss)/d(W) (Ct,Cs).
// `scale` multiplies the loss and both gradients (the term's weight / number of pairs).
double hidden_state_loss(HiddenLossKind kind, const float* hs, const float* W, const float* ht,
                         const float* weights, int N, int Cs, int Ct, double normalizer,
                         double scale, float* dhs, float* dW);

// Attention-map distillation (the attention transfer of MiniLM, Wang et al. 2020, on
// head-averaged maps so that teacher and student may have different head counts): per query
// position i of sequence b with mask weight w, KL(A_t || A_s) over the keys j <= i, where A is the
// mean over the layer's heads of the attention probabilities. att_s (B,NHs,T,T), att_t
// (B,NHt,T,T); weights (B*T) per query position or null. Returns
// scale * sum w * KL / normalizer; datt_s (B,NHs,T,T), when non-null, ACCUMULATES its gradient.
double attention_map_loss(const float* att_s, int NHs, const float* att_t, int NHt,
                          const float* weights, int B, int T, double normalizer, double scale,
                          float* datt_s);

}  // namespace distill
