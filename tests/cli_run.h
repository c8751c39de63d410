// Test helper: run `distill ARGS` with stdout and stderr captured through files in `dir`.
#pragma once
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace distill::testing_cli {

struct CliRun {
  int status;
  std::string out, err;
};

inline CliRun run_cli(const std::string& args, const std::filesystem::path& dir) {
  const std::string cmd = std::string(DISTILL_BINARY) + " " + args + " > " +
                          (dir / "out").string() + " 2> " + (dir / "err").string();
  CliRun r;
  r.status = std::system(cmd.c_str());
  auto slurp = [](const std::filesystem::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  r.out = slurp(dir / "out");
  r.err = slurp(dir / "err");
  return r;
}

}  // namespace distill::testing_cli
