#include "train/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fmt/format.h>

#include "core/error.h"
#include "core/file.h"
#include "formats/model_dir.h"
#include "formats/safetensors.h"

namespace distill {
namespace fs = std::filesystem;

namespace {

std::string checkpoint_name(int64_t step) { return fmt::format("step-{:08d}", step); }

std::vector<std::pair<int64_t, fs::path>> list_checkpoints(const fs::path& dir) {
  std::vector<std::pair<int64_t, fs::path>> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() != 13 || name.rfind("step-", 0) != 0 || !entry.is_directory()) continue;
    if (!fs::exists(entry.path() / "trainer_state.json")) continue;
    out.emplace_back(std::stoll(name.substr(5)), entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

std::string save_checkpoint(const std::string& run_dir, const Model& model, AdamW& optimizer,
                            const TrainerState& state, int keep, const SaveModelOptions& save,
                            const std::vector<StateTensor>& task_state) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) throw Error("{}: cannot create checkpoint directory: {}", root.string(), ec.message());
  const std::string name = checkpoint_name(state.step);
  const fs::path tmp = root / (name + ".tmp-" + std::to_string(::getpid()));
  fs::remove_all(tmp, ec);

  save_model_dir(model, tmp.string(), save);
  SafetensorsWriter moments;
  for (const ParamSpec& s : model.param_specs()) {
    moments.add("exp_avg." + s.name, DType::F32, s.shape, optimizer.m().data() + s.offset,
                s.numel * sizeof(float));
    moments.add("exp_avg_sq." + s.name, DType::F32, s.shape, optimizer.v().data() + s.offset,
                s.numel * sizeof(float));
  }
  moments.set_metadata("optimizer_steps", std::to_string(optimizer.steps_taken()));
  moments.write((tmp / "optimizer.safetensors").string());
  if (!task_state.empty()) {
    SafetensorsWriter w;
    for (const StateTensor& t : task_state)
      w.add(t.name, DType::F32, {int64_t(t.numel)}, t.data, t.numel * sizeof(float));
    w.write((tmp / "task_state.safetensors").string());
  }
  nlohmann::json j;
  j["step"] = state.step;
  j["optimizer_steps"] = optimizer.steps_taken();
  // RNG words as strings: JSON numbers above 2^53 do not survive every reader.
  for (uint64_t w : state.rng) j["rng"].push_back(std::to_string(w));
  j["tokens_seen"] = state.tokens_seen;
  j["elapsed_s"] = state.elapsed_s;
  j["options"] = state.extra;
  const std::string text = j.dump(2) + "\n";
  write_file_atomic((tmp / "trainer_state.json").string(), text.data(), text.size());
  fsync_dir(tmp.string());

  // Swap into place. A checkpoint of the same step from an earlier, interrupted run is moved
  // aside first (rename cannot replace a non-empty directory).
  const fs::path final_dir = root / name;
  const fs::path old = root / (name + ".old-" + std::to_string(::getpid()));
  if (fs::exists(final_dir)) fs::rename(final_dir, old);
  fs::rename(tmp, final_dir);
  fsync_dir(root.string());
  const std::string latest = name + "\n";
  write_file_atomic((root / "latest").string(), latest.data(), latest.size());
  fs::remove_all(old, ec);

  if (keep > 0) {
    auto all = list_checkpoints(root);
    for (size_t i = 0; i + size_t(keep) < all.size(); i++) fs::remove_all(all[i].second, ec);
  }
  return final_dir.string();
}

std::optional<std::string> latest_checkpoint(const std::string& run_dir) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  if (!fs::is_directory(root)) return std::nullopt;
  const fs::path latest = root / "latest";
  if (fs::exists(latest)) {
    std::string name = read_file_text(latest.string());
    while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
    if (fs::exists(root / name / "trainer_state.json")) return (root / name).string();
  }
  auto all = list_checkpoints(root);  // `latest` missing or stale: the newest complete one
  if (all.empty()) return std::nullopt;
  return all.back().second.string();
}

void load_checkpoint(const std::string& dir, Model& model, AdamW& optimizer, TrainerState& state) {
  load_weights(model, SafetensorsModel::open(dir));
  const SafetensorsFile moments = SafetensorsFile::open(dir + "/optimizer.safetensors");
  for (const ParamSpec& s : model.param_specs()) {
    for (auto [prefix, buffer] : {std::pair{"exp_avg.", &optimizer.m()},
                                  std::pair{"exp_avg_sq.", &optimizer.v()}}) {
      const TensorInfo& t = moments.get(prefix + s.name);
      if (t.dtype != DType::F32 || t.nbytes != s.numel * sizeof(float))
        throw Error("{}: tensor '{}' should be F32 with {} elements", moments.path(), t.name,
                    s.numel);
      std::memcpy(buffer->data() + s.offset, t.data, t.nbytes);
    }
  }
  const std::string path = dir + "/trainer_state.json";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file_text(path));
    state.step = j.at("step").get<int64_t>();
    optimizer.set_steps_taken(j.at("optimizer_steps").get<int64_t>());
    for (int i = 0; i < 4; i++) state.rng[i] = std::stoull(j.at("rng").at(i).get<std::string>());
    state.tokens_seen = j.at("tokens_seen").get<int64_t>();
    state.elapsed_s = j.at("elapsed_s").get<double>();
    state.extra = j.value("options", nlohmann::json::object());
  } catch (const nlohmann::json::exception& e) {
    throw Error("{}: malformed trainer state: {}", path, e.what());
  }
}

void load_task_state(const std::string& dir, const std::vector<StateTensor>& task_state) {
  if (task_state.empty()) return;
  const SafetensorsFile f = SafetensorsFile::open(dir + "/task_state.safetensors");
  for (const StateTensor& s : task_state) {
    const TensorInfo& t = f.get(s.name);
    if (t.dtype != DType::F32 || t.nbytes != s.numel * sizeof(float))
      throw Error("{}: tensor '{}' should be F32 with {} elements", f.path(), t.name, s.numel);
    std::memcpy(s.data, t.data, t.nbytes);
  }
}

}  // namespace distill
