// The client's half of TVM's RPC handshake, as atrous-rpc-server checks it: "client:<key> [-timeout=N]
// [-secret=S]". Parsing is separate from the socket so that it can be fuzzed (runtime/fuzz/).
#ifndef ATROUS_RPC_HANDSHAKE_H_
#define ATROUS_RPC_HANDSHAKE_H_

#include <string>

namespace atrous {

struct ClientHello {
  std::string key;     // what followed "client:"
  int timeout_s = 0;   // the session time the client asked for, whole seconds (0: none)
  std::string secret;  // what followed "-secret=" (empty: none)
};

// Parses ``header``; false with ``why`` for a header that is not a TVM client's.
bool ParseClientHello(const std::string& header, ClientHello* hello, std::string* why);

// Whether ``given`` equals ``expected`` (non-empty), in time that does not depend on where they differ.
bool SameSecret(const std::string& given, const std::string& expected);

}  // namespace atrous

#endif  // ATROUS_RPC_HANDSHAKE_H_
