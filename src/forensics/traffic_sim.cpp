#include "forensics/traffic_sim.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/file.h"
#include "core/rng.h"
#include "forensics/prompt_sketch.h"
#include "serve/api_keys.h"
#include "serve/usage_store.h"

namespace distill {

namespace {

// Topic vocabularies: what a user asks about. Prompts mix these with general words.
const std::vector<std::vector<std::string>> kTopics = {
    {"garden", "tomato", "soil", "compost", "seedling", "pruning", "mulch", "perennial", "weeds",
     "fertilizer", "raised", "beds", "watering", "roses", "harvest", "greenhouse"},
    {"python", "function", "list", "dictionary", "exception", "loop", "class", "import", "module",
     "decorator", "generator", "pandas", "dataframe", "virtualenv", "pip", "typing"},
    {"recipe", "bake", "flour", "oven", "dough", "sourdough", "butter", "sugar", "whisk", "simmer",
     "sauce", "garlic", "onion", "roast", "spices", "braise"},
    {"mortgage", "interest", "loan", "budget", "savings", "retirement", "stocks", "bonds",
     "inflation", "taxes", "credit", "debt", "portfolio", "dividend", "index", "fund"},
    {"running", "marathon", "stretch", "muscle", "protein", "workout", "cardio", "squat", "injury",
     "recovery", "pace", "training", "sprint", "endurance", "knee", "shoes"},
    {"guitar", "chord", "melody", "rhythm", "scale", "piano", "tempo", "harmony", "song", "lyrics",
     "strum", "tuning", "fret", "composer", "metronome", "octave"},
    {"resume", "interview", "salary", "manager", "promotion", "career", "negotiate", "hiring",
     "linkedin", "recruiter", "offer", "skills", "cover", "letter", "feedback", "colleague"},
    {"travel", "flight", "hotel", "passport", "itinerary", "luggage", "visa", "airport", "museum",
     "beach", "train", "booking", "currency", "hostel", "tour", "backpacking"},
    {"dog", "puppy", "leash", "vet", "kitten", "cat", "litter", "grooming", "treats", "barking",
     "vaccines", "breed", "kennel", "fleas", "adoption", "walks"},
    {"database", "query", "index", "join", "table", "schema", "transaction", "postgres", "sqlite",
     "replication", "migration", "primary", "key", "foreign", "normalize", "backup"},
    {"planet", "galaxy", "telescope", "orbit", "comet", "nebula", "gravity", "asteroid", "eclipse",
     "moon", "jupiter", "saturn", "light", "year", "supernova", "cosmology"},
    {"history", "empire", "roman", "medieval", "revolution", "treaty", "dynasty", "war", "castle",
     "pharaoh", "renaissance", "colonial", "monarchy", "senate", "battle", "ancient"},
    {"poem", "sonnet", "metaphor", "rhyme", "stanza", "verse", "imagery", "haiku", "novel",
     "character", "plot", "narrator", "fiction", "chapter", "dialogue", "theme"},
    {"baby", "toddler", "sleep", "diaper", "feeding", "tantrum", "daycare", "teething", "stroller",
     "bedtime", "potty", "nursery", "crawl", "pediatrician", "naps", "milestones"},
    {"car", "engine", "brakes", "tires", "oil", "battery", "transmission", "mileage", "hybrid",
     "electric", "charging", "mechanic", "warranty", "clutch", "radiator", "alignment"},
    {"chemistry", "molecule", "atom", "reaction", "acid", "base", "electron", "bond", "catalyst",
     "solution", "oxidation", "isotope", "periodic", "element", "compound", "ph"},
    {"linux", "kernel", "shell", "bash", "permissions", "process", "systemd", "filesystem", "grep",
     "ssh", "cron", "package", "terminal", "daemon", "mount", "sudo"},
    {"painting", "watercolor", "canvas", "brush", "acrylic", "sketch", "perspective", "color",
     "palette", "portrait", "landscape", "shading", "easel", "charcoal", "gallery", "oil"},
    {"climate", "carbon", "emissions", "solar", "wind", "renewable", "recycling", "ocean",
     "glacier", "drought", "forest", "biodiversity", "pollution", "energy", "warming", "species"},
    {"soccer", "football", "goal", "league", "referee", "penalty", "striker", "coach", "tournament",
     "offside", "midfield", "season", "transfer", "tactics", "keeper", "match"},
    {"diabetes", "insulin", "blood", "pressure", "cholesterol", "symptoms", "diet", "vitamin",
     "allergy", "headache", "fever", "dosage", "prescription", "nutrition", "calories", "sleep"},
    {"javascript", "react", "component", "state", "promise", "async", "browser", "css", "html",
     "typescript", "node", "npm", "webpack", "hook", "render", "dom"},
    {"philosophy", "ethics", "kant", "virtue", "existential", "logic", "argument", "free", "will",
     "consciousness", "stoic", "plato", "aristotle", "utilitarian", "moral", "truth"},
    {"wedding", "bride", "venue", "invitation", "guests", "dress", "ceremony", "reception",
     "honeymoon", "bouquet", "toast", "catering", "engagement", "ring", "vows", "photographer"},
};

const std::vector<std::string> kGeneral = {
    "the",    "a",        "my",      "for",   "with",       "about",   "best",    "good",
    "way",    "some",     "new",     "old",   "simple",     "quick",   "first",   "time",
    "really", "help",     "problem", "idea",  "difference", "between", "example", "beginner",
    "week",   "today",    "small",   "big",   "without",    "still",   "cheap",   "easy",
    "common", "mistakes", "tips",    "steps", "right",      "better",  "why",     "long"};

// Openers and closers people use; each benign user habitually uses a few of them.
const std::vector<std::string> kOpeners = {"how do i",
                                           "what is the",
                                           "can you explain",
                                           "why does",
                                           "is it true that",
                                           "help me with",
                                           "give me ideas for",
                                           "what are some",
                                           "tell me about",
                                           "i need advice on",
                                           "compare",
                                           "what should i know about",
                                           "how can i improve",
                                           "explain like i am five",
                                           "quick question",
                                           "whats the difference",
                                           "any tips on",
                                           "write a short note on",
                                           "summarize",
                                           "list",
                                           "how to fix",
                                           "recommend",
                                           "should i worry about",
                                           "what happens when",
                                           "is there a way to",
                                           "please describe",
                                           "walk me through",
                                           "i am confused about",
                                           "brainstorm",
                                           "draft a message"};
const std::vector<std::string> kClosers = {"",
                                           "",
                                           "",
                                           "",
                                           "thanks",
                                           "please",
                                           "in simple terms",
                                           "step by step",
                                           "briefly",
                                           "with examples",
                                           "for a beginner",
                                           "thank you",
                                           "asap",
                                           "in detail"};

// Harvester templates: fixed words around a slot.
const std::vector<std::pair<std::string, std::string>> kTemplates = {
    {"Write a detailed encyclopedia article explaining",
     "including history definitions and examples."},
    {"You are an expert tutor. Produce a comprehensive lesson on", "with exercises and answers."},
    {"Generate a long high quality answer to the following question about",
     "Respond thoroughly and cite reasoning."},
    {"Instruction: explain the concept of", "Output: a complete structured explanation."},
    {"As a knowledgeable assistant describe everything about", "covering pros cons and details."},
    {"Task 7 of dataset build. Topic:", "Answer in at least five paragraphs."},
    {"Create training data: question and ideal answer regarding", "Format as Q and A."},
    {"Provide an in depth technical overview of", "suitable for a textbook chapter."},
    {"Teach me comprehensively about", "leaving nothing out and using precise terminology."},
    {"Dataset entry. Subject", "Write the reference completion now."},
};

template <typename T>
const T& pick(Rng& rng, const std::vector<T>& v) {
  return v[rng.below(v.size())];
}

// Exponential with the given mean.
double exponential(Rng& rng, double mean) { return -mean * std::log(1.0 - rng.uniform()); }

// Poisson by inversion (small means) or a rounded normal (large ones).
int64_t poisson(Rng& rng, double mean) {
  if (mean > 50) return std::max<int64_t>(0, std::llround(mean + std::sqrt(mean) * rng.normal()));
  const double l = std::exp(-mean);
  int64_t k = 0;
  double p = rng.uniform();
  while (p > l) {
    k++;
    p *= rng.uniform();
  }
  return k;
}

double lognormal(Rng& rng, double median, double sigma) {
  return median * std::exp(sigma * rng.normal());
}

struct Request {
  double time = 0.0;
  std::string prompt;
  int logprobs = -1;
  int64_t max_tokens = 256;
};

// A benign-style prompt: opener, content words mostly from `topic`, optional closer.
std::string natural_prompt(Rng& rng, const std::string& opener, int topic) {
  std::string p = opener;
  const int words = 2 + int(rng.below(6));
  for (int i = 0; i < words; i++)
    p += " " + (rng.uniform() < 0.65 ? pick(rng, kTopics[size_t(topic)]) : pick(rng, kGeneral));
  const std::string& closer = pick(rng, kClosers);
  if (!closer.empty()) p += " " + closer;
  if (rng.uniform() < 0.7) p += "?";
  if (rng.uniform() < 0.5) p[0] = char(std::toupper((unsigned char)p[0]));
  return p;
}

// Diurnal session start: the account's waking hours in its timezone.
double session_start(Rng& rng, double day0, double tz_hours) {
  double hour = 8.0 + 15.0 * rng.uniform();  // 08:00-23:00 local
  if (rng.uniform() < 0.5) hour = 12.0 + 4.0 * rng.normal();
  hour = std::clamp(hour, 6.0, 23.9);
  return day0 + (hour - tz_hours) * 3600.0;
}

// Requests in human sessions: active days, 1-3 sessions a day, minutes between requests.
std::vector<double> human_times(Rng& rng, const TrafficSimOptions& o, double per_day,
                                double p_active) {
  std::vector<double> t;
  const double tz = double(int(rng.below(24)) - 11);
  for (int d = 0; d < o.days; d++) {
    if (rng.uniform() > p_active) continue;
    const double day0 = o.start_time + 86400.0 * d;
    const int64_t n = poisson(rng, per_day / p_active);
    const int sessions = 1 + int(rng.below(3));
    for (int s = 0; s < sessions; s++) {
      double at = session_start(rng, day0, tz);
      const int64_t k = n / sessions + (s < n % sessions ? 1 : 0);
      for (int64_t i = 0; i < k; i++) {
        at += exponential(rng, 90.0);
        t.push_back(at);
      }
    }
  }
  return t;
}

// Machine timing: a steady rate around the clock with a little jitter.
std::vector<double> machine_times(Rng& rng, const TrafficSimOptions& o, double per_day) {
  std::vector<double> t;
  const double span = 86400.0 * o.days;
  const double start = o.start_time + rng.uniform() * 3600.0;
  const int64_t n = std::max<int64_t>(1, poisson(rng, per_day * o.days));
  for (int64_t i = 0; i < n; i++)
    t.push_back(start + span * (double(i) + rng.uniform()) / double(n));
  return t;
}

// The walker's corpus: the given text file's sentences, or generated topic sentences.
std::vector<std::string> corpus_passages(Rng& rng, const TrafficSimOptions& o) {
  std::vector<std::string> out;
  if (!o.corpus.empty()) {
    std::ifstream in(o.corpus);
    if (!in) throw Error("{}: cannot read the corpus", o.corpus);
    std::string line, passage;
    while (std::getline(in, line)) {
      passage += line + " ";
      if (passage.size() > 200) {
        out.push_back(passage);
        passage.clear();
      }
    }
    if (out.size() < 100)
      throw Error("{}: the corpus has {} passages of 200 bytes; the walker needs at least 100",
                  o.corpus, out.size());
    return out;
  }
  for (int i = 0; i < 20000; i++) {
    const int topic = int(rng.below(kTopics.size()));
    std::string p;
    for (int s = 0; s < 2; s++) {
      const int words = 8 + int(rng.below(8));
      for (int w = 0; w < words; w++)
        p += (w ? " " : "") +
             (rng.uniform() < 0.5 ? pick(rng, kTopics[size_t(topic)]) : pick(rng, kGeneral));
      p += ". ";
    }
    out.push_back(p);
  }
  return out;
}

struct Account {
  std::string id, kind, style;  // kind: benign subtype or "harvester"
  int group = -1;               // sybil group
  std::vector<Request> requests;
};

int topic_of(Rng& rng, const std::vector<int>& topics) { return topics[rng.below(topics.size())]; }

Account benign_account(Rng& rng, const TrafficSimOptions& o, int index) {
  Account a;
  const double u = rng.uniform();
  a.kind = u < 0.80 ? "chat" : u < 0.90 ? "power" : u < 0.95 ? "app" : "evaluator";
  std::vector<int> topics;
  const int ntopics = a.kind == "power" ? 3 + int(rng.below(3))
                      : a.kind == "app" ? 1
                                        : 1 + int(rng.below(a.kind == "evaluator" ? 2 : 3));
  while (int(topics.size()) < ntopics) {
    const int t = int(rng.below(kTopics.size()));
    if (std::find(topics.begin(), topics.end(), t) == topics.end()) topics.push_back(t);
  }
  std::vector<std::string> openers;
  const int nopen = 3 + int(rng.below(6));
  for (int i = 0; i < nopen; i++) openers.push_back(pick(rng, kOpeners));
  const bool sometimes_logprobs = rng.uniform() < 0.1;

  if (a.kind == "app") {
    // One fixed template of the application's own (its words are unique to it) over its topic.
    std::string head = fmt::format("ticket {} classify the following customer message for team",
                                   rng.below(1000000));
    const auto times = machine_times(rng, o, lognormal(rng, 150.0, 0.6));
    for (double t : times) {
      Request r;
      r.time = t;
      r.prompt = head + ":";
      const int words = 4 + int(rng.below(10));
      for (int w = 0; w < words; w++)
        r.prompt += " " + (rng.uniform() < 0.6 ? pick(rng, kTopics[size_t(topics[0])])
                                               : pick(rng, kGeneral));
      r.prompt += ". Answer with one label.";
      r.logprobs = rng.uniform() < 0.5 ? 1 : -1;
      r.max_tokens = 8;
      a.requests.push_back(r);
    }
    return a;
  }
  const double per_day = a.kind == "power"       ? lognormal(rng, 60.0, 0.6)
                         : a.kind == "evaluator" ? lognormal(rng, 40.0, 0.5)
                                                 : lognormal(rng, 12.0, 0.8);
  const auto times = human_times(rng, o, per_day, 0.3 + 0.7 * rng.uniform());
  std::vector<std::string> previous;
  for (double t : times) {
    Request r;
    r.time = t;
    const double v = rng.uniform();
    if (!previous.empty() && v < 0.02) {
      r.prompt = pick(rng, previous);  // asks the same thing again
    } else if (!previous.empty() && v < 0.12) {
      r.prompt = previous.back() + " " + pick(rng, kGeneral);  // refines the last question
    } else {
      r.prompt = natural_prompt(rng, pick(rng, openers), topic_of(rng, topics));
    }
    previous.push_back(r.prompt);
    if (a.kind == "evaluator")
      r.logprobs = rng.uniform() < 0.8 ? 1 + int(rng.below(5)) : -1;
    else if (sometimes_logprobs && rng.uniform() < 0.2)
      r.logprobs = 1 + int(rng.below(5));
    r.max_tokens = 64 + int64_t(rng.below(512));
    a.requests.push_back(r);
  }
  return a;
}

// Terms across every topic, in a sweep order.
std::string sweep_term(Rng& rng) {
  const auto& topic = kTopics[rng.below(kTopics.size())];
  std::string term = pick(rng, topic);
  if (rng.uniform() < 0.5) term += " " + pick(rng, topic);
  return term;
}

void harvester_requests(Rng& rng, const TrafficSimOptions& o, Account& a,
                        const std::vector<std::string>& corpus, int sybil_template) {
  const std::string& s = a.style;
  if (s == "template") {
    std::vector<size_t> mine;
    const int n = 1 + int(rng.below(3));
    for (int i = 0; i < n; i++) mine.push_back(rng.below(kTemplates.size()));
    for (double t : machine_times(rng, o, lognormal(rng, 500.0, 0.5))) {
      const auto& tp = kTemplates[mine[rng.below(mine.size())]];
      a.requests.push_back({t, tp.first + " " + sweep_term(rng) + ". " + tp.second,
                            rng.uniform() < 0.9 ? 20 : -1, 1024});
    }
  } else if (s == "walker") {
    size_t at = rng.below(corpus.size());
    for (double t : machine_times(rng, o, lognormal(rng, 300.0, 0.5))) {
      a.requests.push_back({t, "Continue the text: " + corpus[at % corpus.size()], 20, 512});
      at++;
    }
  } else if (s == "paraphrase" || s == "stealth") {
    const bool stealth = s == "stealth";
    const auto times = stealth ? human_times(rng, o, lognormal(rng, 25.0, 0.3), 0.9)
                               : machine_times(rng, o, lognormal(rng, 250.0, 0.5));
    for (double t : times) {
      Request r{t, natural_prompt(rng, pick(rng, kOpeners), int(rng.below(kTopics.size()))), -1,
                512};
      if (stealth ? rng.uniform() < 0.33 : rng.uniform() < 0.6) r.logprobs = stealth ? 5 : 20;
      a.requests.push_back(r);
    }
  } else if (s == "focused") {
    // Distilling a task-specific student: one or two topics, varied natural prompts, top-20.
    std::vector<int> topics = {int(rng.below(kTopics.size()))};
    if (rng.uniform() < 0.5) topics.push_back(int(rng.below(kTopics.size())));
    for (double t : machine_times(rng, o, lognormal(rng, 200.0, 0.5)))
      a.requests.push_back(
          {t, natural_prompt(rng, pick(rng, kOpeners), topic_of(rng, topics)), 20, 512});
  } else if (s == "sybil") {
    const auto& tp = kTemplates[size_t(sybil_template) % kTemplates.size()];
    for (double t : machine_times(rng, o, lognormal(rng, 60.0, 0.4)))
      a.requests.push_back({t, tp.first + " " + sweep_term(rng) + ". " + tp.second,
                            rng.uniform() < 0.7 ? 20 : -1, 1024});
  }
}

}  // namespace

const std::vector<std::string>& traffic_styles() {
  static const std::vector<std::string> s = {"template", "walker",  "paraphrase",
                                             "stealth",  "focused", "sybil"};
  return s;
}

TrafficSimSummary simulate_traffic(const TrafficSimOptions& o) {
  if (o.out.empty()) throw Error("simulate: no output database given");
  if (std::filesystem::exists(o.out))
    throw Error("{}: already exists; the simulator writes a new usage database", o.out);
  if (o.benign < 0 || o.harvesters < 0 || o.days < 1)
    throw Error("simulate: --benign and --harvesters must be >= 0 and --days >= 1");
  for (const auto& s : o.styles)
    if (std::find(traffic_styles().begin(), traffic_styles().end(), s) == traffic_styles().end())
      throw Error(
          "simulate: unknown harvester style '{}' (known: template, walker, paraphrase, "
          "stealth, focused, sybil)",
          s);
  Rng rng(o.seed);
  const std::vector<std::string> corpus = corpus_passages(rng, o);
  std::vector<Account> accounts;
  for (int i = 0; i < o.benign; i++) {
    Rng r(o.seed * 1000003ull + uint64_t(i));
    accounts.push_back(benign_account(r, o, i));
  }
  int h = 0;
  for (const auto& style : o.styles) {
    for (int i = 0; i < o.harvesters; i++, h++) {
      Rng r(o.seed * 7919ull + 0x5eedull + uint64_t(h) * 104729ull);
      Account a;
      a.kind = "harvester";
      a.style = style;
      if (style == "sybil") a.group = i / 8;
      harvester_requests(r, o, a, corpus, int(o.seed % 7) + 3 * (i / 8));
      accounts.push_back(std::move(a));
    }
  }
  // Ids in shuffled order, so a reader of the database cannot tell kinds apart by name.
  std::vector<size_t> order(accounts.size());
  for (size_t i = 0; i < order.size(); i++) order[i] = i;
  for (size_t i = order.size(); i > 1; i--) std::swap(order[i - 1], order[rng.below(i)]);
  for (size_t i = 0; i < order.size(); i++) accounts[order[i]].id = fmt::format("key-{:05d}", i);

  std::vector<serve::UsageRecord> rows;
  nlohmann::json truth = nlohmann::json::object();
  TrafficSimSummary sum;
  for (const Account& a : accounts) {
    nlohmann::json t = {{"kind", a.kind}, {"requests", a.requests.size()}};
    if (a.kind == "harvester") {
      t["style"] = a.style;
      if (a.group >= 0) t["group"] = a.group;
      sum.harvesters++;
    } else {
      sum.benign++;
    }
    truth[a.id] = t;
    for (const Request& q : a.requests) {
      serve::UsageRecord u;
      u.key_id = a.id;
      u.time = q.time;
      u.endpoint = "/v1/completions";
      u.prompt_sha256 = serve::sha256_hex(q.prompt);
      u.prompt_chars = int64_t(q.prompt.size());
      u.tokens_in = int64_t(q.prompt.size());
      u.tokens_out = std::min<int64_t>(q.max_tokens, 16 + int64_t(q.prompt.size() % 200));
      u.logprobs = q.logprobs;
      u.latency_ms = 5.0 + double(u.tokens_out) * 0.8;
      u.status = 200;
      u.prompt_sketch = sketch_to_blob(prompt_sketch(q.prompt));
      rows.push_back(std::move(u));
    }
  }
  std::sort(rows.begin(), rows.end(), [](const serve::UsageRecord& x, const serve::UsageRecord& y) {
    return x.time < y.time;
  });
  {
    serve::UsageStore store(o.out);
    store.record_all(rows);
  }
  sum.rows = int64_t(rows.size());
  sum.truth_path = o.out + ".truth.json";
  write_file_atomic(sum.truth_path, nlohmann::json({{"seed", o.seed},
                       {"benign", o.benign},
                       {"harvesters_per_style", o.harvesters},
                       {"styles", o.styles},
                       {"days", o.days},
                       {"accounts", truth}})
                                        .dump(1) + "\n");
  return sum;
}

}  // namespace distill
