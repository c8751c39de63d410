// The official `openai` npm SDK drives `distill serve` (tests/serve_sdk/sdk_test.mjs):
// models, completions (n, seed, logprobs, token-id prompts, echo, streaming), chat (logprobs,
// streaming with usage) and each error class (400, 401, 404, 413, 429, 500). Skipped, saying
// why, when the SDK is not installed (scripts/test installs it: cd tests/serve_sdk && npm ci).
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <fstream>

#include "serve/api_keys.h"
#include "serve_process.h"

namespace distill {
namespace {
namespace fs = std::filesystem;
using testing_serve::ServeProcess;

const fs::path kSdkDir = fs::path(DISTILL_FIXTURES).parent_path() / "serve_sdk";

TEST(ServeSdk, OpenAiSdkPassesEveryCheck) {
  if (!fs::exists(kSdkDir / "node_modules" / "openai" / "package.json"))
    GTEST_SKIP() << "the openai SDK is not installed: run (cd tests/serve_sdk && npm ci "
                    "--ignore-scripts) or scripts/test";
  if (std::system("node --version >/dev/null 2>&1") != 0) GTEST_SKIP() << "node is not installed";
  const fs::path dir =
      fs::temp_directory_path() / ("distill-serve-sdk-" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string model = testing_serve::save_tiny_model(dir / "tiny");
  const std::string key = "sk-sdk-test", limited = "sk-sdk-limited";
  std::ofstream(dir / "keys.txt") << "sdk " << serve::sha256_hex(key) << "\nlimited "
                                  << serve::sha256_hex(limited) << " rpm=2\n";
  const std::vector<std::string> common = {"--model",
                                           model,
                                           "--api-keys",
                                           (dir / "keys.txt").string(),
                                           "--max-tokens-limit",
                                           "64",
                                           "--max-body-bytes",
                                           "30000"};
  ServeProcess server(common, (dir / "serve.log").string());
  std::vector<std::string> faulty_args = common;
  faulty_args.insert(faulty_args.end(), {"--inject-faults", "500=1"});
  ServeProcess faulty(faulty_args, (dir / "faulty.log").string());
  const std::string base = "http://127.0.0.1:" + std::to_string(server.port()) + "/v1";
  const std::string faulty_base = "http://127.0.0.1:" + std::to_string(faulty.port()) + "/v1";
  const std::string cmd = "node " + (kSdkDir / "sdk_test.mjs").string() + " " + base + " " + key +
                          " " + limited + " tiny " + faulty_base + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int rc = pclose(p);
  EXPECT_EQ(rc, 0) << out;
  for (const char* name :
       {"ok models.list", "ok completions streaming", "ok chat streaming with usage",
        "ok 400 malformed JSON", "ok 401 wrong key", "ok 404 unknown model",
        "ok 413 body too large", "ok 429 rate limit", "ok 500 server error",
        "ok still serving after the errors"})
    EXPECT_NE(out.find(name), std::string::npos) << name << " missing from:\n" << out;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace distill
