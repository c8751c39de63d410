#include <memory>

#include "cli/train_cli.h"
#include "cli/verbs.h"
#include "train/distill_train.h"

namespace distill::cli {

VerbRun add_train(CLI::App& app) {
  auto o = std::make_shared<DistillTrainOptions>();
  o->loop.out = "runs/student";
  app.add_option("--teacher", o->teacher, "teacher model directory");
  add_weights_option(app, o->teacher_weights, "--teacher-weights", "the online teacher");
  app.add_option("--data", o->data, "online: text files the teacher scores");
  app.add_option("--val-fraction", o->val_fraction, "held out: tail of each text file (online) or last records (offline)");
  app.add_option("--dataset", o->dataset, "offline: dataset directory of teacher log-probs");
  app.add_option("--student-config", o->student_config, "HF config.json of a fresh student");
  app.add_option("--student-preset", o->student_preset, "built-in student shape");
  app.add_option("--init-from", o->init_from, "student checkpoint directory to start from");
  app.add_flag("--init-from-teacher", o->init_from_teacher,
               "start from the teacher's layers listed in --keep-layers");
  app.add_option("--keep-layers", o->keep_layers, "teacher layers the student keeps, e.g. 0,2,4");
  app.add_option("--loss", o->loss,
                 "weighted KD terms: ce, kl, rkl, jsd[:beta], tvd, skl[:lambda], srkl[:lambda], "
                 "e.g. kl=0.5,ce=0.5");
  app.add_option("--temperature", o->temperature, "distillation temperature T (KD x T^2)");
  app.add_option("--student-tokenizer", o->student_tokenizer,
                 "student vocabulary other than the teacher's (tokenizer file, model directory "
                 "or byte): cross-tokenizer distillation with --loss uld, xkl, ce");
  app.add_option("--tail", o->tail, "sparse teachers' tail rule: bucket or ignore");
  app.add_option("--on-policy-fraction", o->on_policy_fraction,
                 "online: share of micro-batches whose text the student samples itself (GKD's "
                 "lambda; 0: none)")
      ->capture_default_str();
  app.add_option("--prompt-tokens", o->prompt_tokens,
                 "on-policy: window tokens the student continues from (0: seq-len / 2)")
      ->capture_default_str();
  app.add_option("--sample-temperature", o->sample_temperature,
                 "on-policy: the student's sampling temperature")
      ->capture_default_str();
  app.add_option("--teacher-endpoint", o->teacher_endpoint,
                 "online: a teacher behind an OpenAI-compatible /completions endpoint that "
                 "returns prompt log-probabilities (echo + logprobs), e.g. http://host:8000/v1");
  app.add_option("--teacher-model", o->teacher_model, "the model name sent to the endpoint")
      ->capture_default_str();
  app.add_option("--teacher-api-key-env", o->teacher_api_key_env,
                 "environment variable holding the endpoint's API key")
      ->capture_default_str();
  app.add_option("--teacher-top-logprobs", o->teacher_top_logprobs,
                 "endpoint: top log-probabilities per position (1..20)")
      ->capture_default_str();
  app.add_option("--teacher-concurrency", o->teacher_concurrency,
                 "endpoint: scoring requests in flight")
      ->capture_default_str();
  app.add_option("--hidden-loss", o->hidden_loss,
                 "online: also distill hidden states with mse or cosine (learned projection "
                 "when the widths differ)");
  app.add_option("--hidden-weight", o->hidden_weight, "weight of the hidden-state term")
      ->capture_default_str();
  app.add_option("--attention-loss", o->attention_loss,
                 "online: also distill head-averaged attention maps with kl");
  app.add_option("--attention-weight", o->attention_weight, "weight of the attention term")
      ->capture_default_str();
  app.add_option("--attention-layers", o->attention_layers,
                 "attention pairs student:teacher layers (0-based), e.g. 3:5, or last")
      ->capture_default_str();
  app.add_option("--layer-map", o->layer_map,
                 "hidden-state pairs student:teacher boundaries (0 = embeddings, L = last "
                 "layer's output), e.g. 2:4,4:8, or uniform")
      ->capture_default_str();
  add_train_loop_options(app, o->loop);
  auto dry_run = std::make_shared<bool>(false);
  add_dry_run_option(app, *dry_run);
  return [o, dry_run]() {
    if (*dry_run) {
      print_memory_estimate(distill_train_memory_estimate(*o));
      return 0;
    }
    TrainDisplay display;
    distill_train(*o, std::ref(display));
    return 0;
  };
}

}  // namespace distill::cli
