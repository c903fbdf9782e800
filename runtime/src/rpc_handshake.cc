#include "rpc_handshake.h"

#include <cstddef>
#include <sstream>

namespace atrous {

bool ParseClientHello(const std::string& header, ClientHello* hello, std::string* why) {
  std::istringstream words(header);
  std::string word;
  if (!(words >> word) || word.rfind("client:", 0) != 0) {
    return *why = "not a TVM RPC client (no 'client:<key>')", false;
  }
  *hello = ClientHello{word.substr(7), 0, ""};
  while (words >> word) {
    if (word.rfind("-timeout=", 0) == 0) {  // seconds; TVM's Python client writes a float ("7200.0")
      const std::string value = word.substr(9);
      const std::string whole = value.substr(0, value.find('.'));
      const std::string fraction = value.size() > whole.size() ? value.substr(whole.size() + 1) : "";
      if (whole.empty() || whole.size() > 9 || whole.find_first_not_of("0123456789") != std::string::npos ||
          fraction.find_first_not_of("0123456789") != std::string::npos) {
        return *why = "malformed -timeout", false;
      }
      hello->timeout_s = std::stoi(whole);
    } else if (word.rfind("-secret=", 0) == 0) {
      hello->secret = word.substr(8);
    }  // other options of TVM clients are theirs to add; ignored
  }
  return true;
}

bool SameSecret(const std::string& given, const std::string& expected) {
  if (expected.empty()) return false;
  unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < given.size(); ++i) {
    diff |= static_cast<unsigned char>(given[i] ^ expected[i % expected.size()]);
  }
  return diff == 0;
}

}  // namespace atrous
