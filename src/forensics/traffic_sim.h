// A traffic simulator for measuring the harvest audit: benign API users and harvesters of several
// styles, written through serve::UsageStore (the real schema, prompt sketches included) so
// `distill audit` reads it exactly as it reads a server's database. The ground truth (which
// account is what) goes to a JSON sidecar the audit never reads.
//
// Benign users: chat users (1-3 favourite topics, habitual openers, diurnal sessions, rare
// log-probabilities), power users (3-5 topics, more volume), applications (one fixed template of
// their own over one topic, steady volume round the clock) and evaluators (one or two topics,
// top-1..5 log-probabilities on most requests). Harvester styles:
//   template    one to three templates swept over terms of every topic, high volume, top-20
//   walker      consecutive passages of a corpus, top-20 log-probabilities on every request
//   paraphrase  benign-looking prompts over every topic with every opener, high volume
//   stealth     like paraphrase at a benign volume and diurnal timing, top-5 on a third
//   focused     distilling a task-specific student: natural prompts on one or two topics,
//               steady volume, top-20 log-probabilities on every request
//   sybil       groups of 8 accounts sharing one template, each at a modest volume
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace distill {

struct TrafficSimOptions {
  std::string out;      // usage database to create (must not exist)
  int benign = 1000;    // benign accounts
  int harvesters = 10;  // harvesting accounts per style
  std::vector<std::string> styles = {"template", "walker",  "paraphrase",
                                     "stealth",  "focused", "sybil"};
  int days = 7;  // length of the simulated period
  uint64_t seed = 1;
  std::string corpus;         // text file the walker reads (""): a built-in generated corpus
  double start_time = 1.7e9;  // Unix seconds of the first day's midnight (UTC)
};

struct TrafficSimSummary {
  int64_t rows = 0;
  int benign = 0, harvesters = 0;
  std::string truth_path;  // out + ".truth.json"
};

// The harvester styles the simulator knows.
const std::vector<std::string>& traffic_styles();

// Throws Error for an unknown style, a bad count, an existing `out` or an unreadable corpus.
TrafficSimSummary simulate_traffic(const TrafficSimOptions& o);

}  // namespace distill
