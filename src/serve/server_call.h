// One API request in flight, shared by the handler and (when streaming) the content provider
// that outlives it; what the usage store and the request log get when it ends.
#pragma once
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "serve/api_keys.h"
#include "serve/api_request.h"
#include "serve/engine.h"

namespace distill::serve {

struct Server::Call {
  std::string endpoint;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  double unix_time = 0.0;
  const ApiKey* key = nullptr;
  std::string prompt_sha256;
  int64_t prompt_chars = 0;
  int64_t tokens_in = 0, tokens_out = 0;
  int logprobs = -1;
  bool finished = false;

  // Generation state.
  ApiRequest request;
  std::string id;
  int64_t created = 0;
  std::vector<std::vector<int32_t>> prompt_ids;  // per prompt
  std::vector<std::string> prompt_texts;         // per prompt (echo)
  std::shared_ptr<EngineJob> job;
};

}  // namespace distill::serve
