#include <memory>

#include "cli/train_cli.h"
#include "cli/verbs.h"
#include "train/distill_train.h"

namespace distill::cli {

VerbRun add_train(CLI::App& app) {
  auto o = std::make_shared<DistillTrainOptions>();
  o->loop.out = "runs/student";
  app.add_option("--teacher", o->teacher, "teacher model directory");
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
