// libFuzzer target: the YAML config loader (src/control/config.cpp), from a string and from a file (whose
// relative *_file secrets are read next to it). Malformed YAML, wrong types, unknown keys and bad values must
// come back as errors with a message, never as a crash or an exception; a load either gives a config or
// errors.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "fuzz_check.hpp"
#include "pgrouter/control/config.hpp"

namespace control = pgrouter::control;

namespace {
std::string dir;  // a private directory with a secret file, so password_file: secret.txt can succeed

void check(const control::LoadResult& r) {
  FUZZ_CHECK(r.ok() == r.errors.empty());
  for (auto& e : r.errors) {
    FUZZ_CHECK(!e.message.empty());
    FUZZ_CHECK(e.line >= 0 && e.column >= 0);
    FUZZ_CHECK(!e.to_string().empty());
  }
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  char tmpl[] = "/tmp/pgrouter-fuzz-config-XXXXXX";
  if (!mkdtemp(tmpl)) std::abort();
  dir = tmpl;
  std::ofstream(dir + "/secret.txt") << "s3cret\n";
  setenv("PGR_FUZZ_PASSWORD", "from-env", 1);  // ${PGR_FUZZ_PASSWORD} and password_env resolve
  std::atexit([] {
    std::remove((dir + "/pgrouter.yaml").c_str());
    std::remove((dir + "/secret.txt").c_str());
    rmdir(dir.c_str());
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string yaml(reinterpret_cast<const char*>(data), size);
  check(control::load_config_string(yaml, "fuzz.yaml"));
  std::string path = dir + "/pgrouter.yaml";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << yaml;
  }
  check(control::load_config_file(path));
  return 0;
}
