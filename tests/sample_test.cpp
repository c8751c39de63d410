// `distill sample`: KV-cache generation through the CLI. Greedy samples equal the naive
// recompute-the-window oracle (infer/sampler.h generate), every sample of every prompt is
// printed, and bad requests are one clear error line.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/rng.h"
#include "formats/model_dir.h"
#include "infer/sampler.h"
#include "model/presets.h"
#include "tokenizer/byte_tokenizer.h"
#include "test_support.h"

namespace distill {
namespace {
namespace fs = std::filesystem;

using test_support::CliRun;
CliRun run(const std::string& args, const fs::path& dir) { return test_support::run_cli(args, dir); }

TEST(SampleCli, GreedyEqualsTheNaiveOracleForEveryPromptAndSample) {
  const fs::path dir = fs::temp_directory_path() / ("distill-sample-" + std::to_string(getpid()));
  fs::create_directories(dir);
  Model m(model_preset("gpt2-tiny"));
  m.init_weights(3);
  SaveModelOptions save;
  save.metadata = {{"distill_tokenizer", ByteTokenizer::kFingerprint}};
  save_model_dir(m, (dir / "model").string(), save);

  const CliRun r = run("sample " + (dir / "model").string() +
                        " --prompt 'And God' --prompt 'In the' --num-samples 2 --max-tokens 12 "
                        "--temperature 0",
                    dir);
  ASSERT_EQ(r.status, 0) << r.err;
  Rng rng(0);
  std::string want;
  for (const char* prompt : {"And God", "In the"}) {
    const auto ids = generate(m, ByteTokenizer::encode(prompt), 12, 256, SamplingOptions{0.0f, 0, 1.0f}, rng);
    for (int i = 1; i <= 2; i++)
      want += "--- sample " + std::to_string(i) + " (prompt \"" + prompt + "\")\n" + prompt +
              ByteTokenizer::decode(ids.data(), ids.size()) + "\n";
  }
  EXPECT_EQ(r.out, want);

  const CliRun bad = run("sample " + (dir / "model").string() + " --max-tokens 300", dir);
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.err.find("error: prompt of 1 tokens + 300 new tokens exceeds the context of"),
            std::string::npos)
      << bad.err;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace distill
