// Test helpers shared by several test programs: a fresh temporary directory, running the CLI
// with captured output, and the message of the distill::Error a call throws.
#pragma once
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include <unistd.h>

#include "core/error.h"

namespace distill::test_support {

// An empty directory <tmp>/distill-<name>-<pid> (removed first if a killed run left it).
inline std::filesystem::path temp_dir(const std::string& name) {
  const std::filesystem::path p = std::filesystem::temp_directory_path() /
                                  ("distill-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

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

// The what() of the distill::Error `f` throws, or "(no error)".
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace distill::test_support
