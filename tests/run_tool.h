// Runs the built indexshare command (INDEXSHARE_TOOL) from CLI tests.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace indexshare::testing_util {

struct RunResult {
  int exit_code = -1;
  std::string out;
};

// Runs the tool with `args` (shell syntax); `redirect` decides what is captured ("2>&1", ...).
inline RunResult run_tool(const std::string& args, const std::string& redirect) {
  const std::string cmd = std::string("\"") + INDEXSHARE_TOOL + "\" " + args + " " + redirect;
  RunResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace indexshare::testing_util
