#include "util/thread_name.h"

#include <pthread.h>

#include <string>

namespace tipd {

void SetThreadName(std::string_view name) {
  // 15 bytes and the terminator; a longer name would be refused whole.
  const std::string cut(name.substr(0, 15));
  pthread_setname_np(pthread_self(), cut.c_str());
}

std::string CurrentThreadName() {
  char buf[16] = {};
  if (pthread_getname_np(pthread_self(), buf, sizeof(buf)) != 0) return "";
  return buf;
}

}  // namespace tipd
