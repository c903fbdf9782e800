// libFuzzer harness: the client's handshake header atrous-rpc-server reads from the network before anything
// else (key, session timeout, shared secret), and the secret comparison.
#include <cstddef>
#include <cstdint>
#include <string>

#include "rpc_handshake.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string header(reinterpret_cast<const char*>(data), size);
  atrous::ClientHello hello;
  std::string why;
  if (atrous::ParseClientHello(header, &hello, &why)) {
    if (hello.timeout_s < 0) __builtin_trap();
    if (atrous::SameSecret(hello.secret, "expected-secret") != (hello.secret == "expected-secret")) __builtin_trap();
  } else if (why.empty()) {
    __builtin_trap();
  }
  return 0;
}
