// atrous-rpc-server: a TVM RPC server for the device, with no Python on it.
//
//   atrous-rpc-server [--host 127.0.0.1] [--port 9090] [--secret FILE] [--tracker HOST:PORT --key KEY]
//                     [--custom-addr ADDR] [--max-session S] [--max-upload-mb N] [--once]
//
// TVM's RPC protocol uploads a shared library and runs it: whoever reaches the port runs code as this server's
// user. So it listens on loopback unless --host says otherwise (reach a board with `ssh -L 9090:localhost:9090`),
// warns when it does not, and with --secret FILE (or ATROUS_RPC_SECRET) refuses every session whose handshake
// lacks the shared secret (atrous's client sends it as "-secret=S" after the key; it is compared in constant time
// and travels in clear, so on networks you do not trust use ssh). Each session runs at most --max-session seconds
// and may write at most --max-upload-mb to its work directory; one session at a time.
//
// It speaks TVM's RPC protocol, so `tvm.rpc.connect(host, port, key=KEY)` and trackers
// (`python -m tvm.exec.rpc_tracker`, `tvm.rpc.connect_tracker(...).request(KEY)`) work with it: the handshake and
// tracker registration are done here, and each session is handed to the TVM runtime's `rpc.ServerLoop` in a
// forked child that works in its own temporary directory (uploads land there; it is removed afterwards).
#include <dlfcn.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "rpc_handshake.h"

namespace ffi = tvm::ffi;

namespace {

constexpr int32_t kRPCMagic = 0xff271, kTrackerMagic = 0x2f271;
constexpr int32_t kCodeSuccess = kRPCMagic, kCodeMismatch = kRPCMagic + 2;
constexpr int kTrackerSuccess = 0, kTrackerPut = 3, kTrackerUpdateInfo = 5, kTrackerPendingKeys = 7;

struct Options {
  std::string host = "127.0.0.1";
  int port = 9090;
  std::string secret;
  int max_session_s = 3600;
  long max_upload_mb = 1024;
  std::string tracker_host;
  int tracker_port = 0;
  std::string key;
  std::string custom_addr;
  bool once = false;
};

void Log(const std::string& text) {
  std::fprintf(stderr, "atrous-rpc-server: %s\n", text.c_str());
  std::fflush(stderr);
}

bool SendAll(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

bool RecvAll(int fd, void* data, size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    ssize_t k = recv(fd, p, n, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

bool SendInt(int fd, int32_t v) { return SendAll(fd, &v, 4); }  // the protocol is little-endian; so are we
bool RecvInt(int fd, int32_t* v) { return RecvAll(fd, v, 4); }

bool SendString(int fd, const std::string& s) {
  return SendInt(fd, static_cast<int32_t>(s.size())) && SendAll(fd, s.data(), s.size());
}

bool RecvString(int fd, std::string* s, int32_t limit = 1 << 20) {
  int32_t n = 0;
  if (!RecvInt(fd, &n) || n < 0 || n > limit) return false;
  s->resize(static_cast<size_t>(n));
  return RecvAll(fd, s->data(), s->size());
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// A JSON request to the tracker; the reply is returned raw (the tracker answers with small JSON values).
bool Tracker(int fd, const std::string& json, std::string* reply) {
  return SendString(fd, json) && RecvString(fd, reply);
}

int ConnectTo(const std::string& host, int port) {
  addrinfo hints{}, *found = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) return -1;
  int fd = -1;
  for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) != 0) close(fd), fd = -1;
  }
  freeaddrinfo(found);
  return fd;
}

int Listen(const std::string& host, int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int yes = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1 ||
      bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 4) != 0) {
    Log("cannot listen on " + host + ":" + std::to_string(port) + ": " + std::strerror(errno));
    std::exit(2);
  }
  return fd;
}

std::string RandomKey(const std::string& prefix) {
  std::random_device rd;
  return prefix + ":" + std::to_string(std::uniform_int_distribution<uint32_t>(0, 99999999)(rd));
}

// Registers with the tracker (if any) and keeps the match key fresh; the tracker hands it to clients.
class TrackerLink {
 public:
  explicit TrackerLink(const Options& o) : o_(o), match_key_(o.key) {}

  bool Enabled() const { return !o_.tracker_host.empty(); }

  // Connect and announce this server; false (and a log line) if the tracker cannot be reached.
  bool Register() {
    if (!Enabled() || fd_ >= 0) return true;
    fd_ = ConnectTo(o_.tracker_host, o_.tracker_port);
    int32_t magic = 0;
    if (fd_ < 0 || !SendInt(fd_, kTrackerMagic) || !RecvInt(fd_, &magic) || magic != kTrackerMagic) {
      Log("cannot reach the RPC tracker at " + o_.tracker_host + ":" + std::to_string(o_.tracker_port) +
          "; retrying");
      Drop();
      return false;
    }
    std::string addr = o_.custom_addr.empty() ? "null" : JsonString(o_.custom_addr);
    std::string reply;
    if (!Tracker(fd_, "[" + std::to_string(kTrackerUpdateInfo) + ", {\"key\": " + JsonString("server:" + o_.key) +
                          ", \"addr\": [" + addr + ", " + std::to_string(o_.port) + "]}]", &reply) ||
        reply != std::to_string(kTrackerSuccess)) {
      Drop();
      return false;
    }
    return Put();
  }

  // Called every ping period while no client connects: re-announce if the key was taken but not used.
  bool Ping() {
    if (!Enabled()) return true;
    std::string reply;
    if (!Tracker(fd_, "[" + std::to_string(kTrackerPendingKeys) + "]", &reply)) return Drop(), false;
    idle_pings_ = reply.find(JsonString(match_key_)) == std::string::npos ? idle_pings_ + 1 : 0;
    if (idle_pings_ > 3) {
      idle_pings_ = 0;
      return Put();
    }
    return true;
  }

  const std::string& MatchKey() const { return match_key_; }

  // After a session, announce a fresh key.
  bool Renew() { return !Enabled() || (fd_ >= 0 ? Put() : Register()); }

  void Drop() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  bool Put() {
    match_key_ = RandomKey(o_.key);
    std::string addr = o_.custom_addr.empty() ? "null" : JsonString(o_.custom_addr);
    std::string reply;
    if (!Tracker(fd_, "[" + std::to_string(kTrackerPut) + ", " + JsonString(o_.key) + ", [" +
                          std::to_string(o_.port) + ", " + JsonString(match_key_) + "], " + addr + "]", &reply) ||
        reply != std::to_string(kTrackerSuccess)) {
      Drop();
      return false;
    }
    return true;
  }

  const Options& o_;
  std::string match_key_;
  int fd_ = -1;
  int idle_pings_ = 0;
};

// TVM's handshake: magic, then "client:<key> [-timeout=N] [-secret=S]"; we answer success and "server:<key>".
bool Handshake(int conn, const Options& o, const std::string& expected_key, int* timeout) {
  int32_t magic = 0;
  std::string header, why;
  atrous::ClientHello hello;
  if (!RecvInt(conn, &magic) || magic != kRPCMagic || !RecvString(conn, &header, 4096)) return false;
  if (!atrous::ParseClientHello(header, &hello, &why)) {
    Log("refused a connection: " + why);
    return false;
  }
  if (hello.key != expected_key) {
    SendInt(conn, kCodeMismatch);
    Log("refused a client with key '" + hello.key + "'");
    return false;
  }
  if (!o.secret.empty() && !atrous::SameSecret(hello.secret, o.secret)) {
    SendInt(conn, kCodeMismatch);
    Log(hello.secret.empty() ? "refused a client without the shared secret"
                             : "refused a client with a wrong shared secret");
    return false;
  }
  *timeout = hello.timeout_s > 0 && hello.timeout_s < o.max_session_s ? hello.timeout_s : o.max_session_s;
  return SendInt(conn, kCodeSuccess) && SendString(conn, "server:" + o.key);
}

// The child side of a session: a private work directory, the two functions TVM's client expects of a server,
// and the runtime's own RPC loop.
[[noreturn]] void Serve(int conn, long max_upload_mb) {
  rlimit size{static_cast<rlim_t>(max_upload_mb) << 20, static_cast<rlim_t>(max_upload_mb) << 20};
  setrlimit(RLIMIT_FSIZE, &size);  // an upload beyond it ends the session (SIGXFSZ), not the board's disk
  char templ[] = "/tmp/atrous-rpc-XXXXXX";
  const char* work = mkdtemp(templ);
  if (work == nullptr || chdir(work) != 0) {
    Log("cannot create a work directory under /tmp");
    _exit(1);
  }
  const std::string dir = work;
  auto path = [dir](const ffi::String& name) {
    std::string n = name;
    return n.find('/') != std::string::npos ? n : dir + "/" + n;
  };
  ffi::Function::SetGlobal("tvm.rpc.server.workpath", ffi::Function::FromTyped(
                                                          [path](ffi::String name) { return ffi::String(path(name)); }),
                           true);
  ffi::Function::SetGlobal("tvm.rpc.server.load_module",
                           ffi::Function::FromTyped([path](ffi::String name) {
                             return ffi::Module::LoadFromFile(ffi::String(path(name)));
                           }),
                           true);
  auto loop = ffi::Function::GetGlobal("rpc.ServerLoop");
  int code = 0;
  if (!loop) {
    Log("this TVM runtime has no rpc.ServerLoop");
    code = 1;
  } else {
    try {
      (*loop)(conn);
    } catch (const std::exception& err) {
      Log(std::string("session ended with an error: ") + err.what());
      code = 1;
    }
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  _exit(code);
}

void RunSession(int conn, int timeout, long max_upload_mb) {
  pid_t child = fork();
  if (child == 0) Serve(conn, max_upload_mb);
  close(conn);
  if (child < 0) return Log(std::string("fork failed: ") + std::strerror(errno));
  int status = 0;
  for (int waited = 0;; ++waited) {
    pid_t done = waitpid(child, &status, timeout > 0 ? WNOHANG : 0);
    if (done == child || (done < 0 && errno != EINTR)) break;
    if (timeout > 0 && waited >= timeout * 10) {
      Log("session exceeded its " + std::to_string(timeout) + " s timeout; stopped");
      kill(child, SIGKILL);
      waitpid(child, &status, 0);
      break;
    }
    if (timeout > 0) usleep(100000);
  }
}

// The shared secret: the file's first line, without surrounding whitespace; a file that is missing, empty or
// readable by others is refused (a secret others can read is no secret).
bool ReadSecret(const std::string& path, std::string* secret) {
  std::ifstream file(path);
  std::string line;
  if (!file || !std::getline(file, line)) {
    Log("cannot read the secret file " + path);
    return false;
  }
  size_t b = line.find_first_not_of(" \t\r"), e = line.find_last_not_of(" \t\r");
  *secret = b == std::string::npos ? "" : line.substr(b, e - b + 1);
  if (secret->empty() || secret->find_first_of(" \t") != std::string::npos) {
    Log("the secret in " + path + " is empty or has spaces");
    return false;
  }
  std::error_code err;
  auto perms = std::filesystem::status(path, err).permissions();
  if (!err && (perms & (std::filesystem::perms::group_read | std::filesystem::perms::others_read)) !=
                  std::filesystem::perms::none) {
    Log("the secret file " + path + " is readable by other users: chmod 600 " + path);
    return false;
  }
  return true;
}

bool ParseArgs(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    bool has_value = i + 1 < argc;
    if (arg == "--once") {
      o->once = true;
    } else if (has_value && arg == "--host") {
      o->host = argv[++i];
    } else if (has_value && arg == "--port") {
      o->port = std::atoi(argv[++i]);
    } else if (has_value && arg == "--key") {
      o->key = argv[++i];
    } else if (has_value && arg == "--secret") {
      if (!ReadSecret(argv[++i], &o->secret)) return false;
    } else if (has_value && arg == "--max-session") {
      o->max_session_s = std::atoi(argv[++i]);
    } else if (has_value && arg == "--max-upload-mb") {
      o->max_upload_mb = std::atol(argv[++i]);
    } else if (has_value && arg == "--custom-addr") {
      o->custom_addr = argv[++i];
    } else if (has_value && arg == "--tracker") {
      std::string t = argv[++i];
      size_t colon = t.rfind(':');
      if (colon == std::string::npos) return false;
      o->tracker_host = t.substr(0, colon);
      o->tracker_port = std::atoi(t.c_str() + colon + 1);
    } else {
      return false;
    }
  }
  if (o->secret.empty() && std::getenv("ATROUS_RPC_SECRET") != nullptr) o->secret = std::getenv("ATROUS_RPC_SECRET");
  return o->port > 0 && o->max_session_s > 0 && o->max_upload_mb > 0 &&
         (o->tracker_host.empty() || (o->tracker_port > 0 && !o->key.empty()));
}

bool IsLoopback(const std::string& host) { return host.rfind("127.", 0) == 0 || host == "localhost"; }

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!ParseArgs(argc, argv, &o)) {
    std::fprintf(stderr,
                 "usage: atrous-rpc-server [--host 127.0.0.1] [--port 9090] [--secret FILE] [--key KEY] "
                 "[--tracker HOST:PORT --key KEY] [--custom-addr ADDR] [--max-session S] [--max-upload-mb N] "
                 "[--once]\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  // CUDA models: TVM's CUDA device API comes from libtvm_runtime_cuda.so (in lib/ beside this server), which
  // needs the NVIDIA driver; on a board without one the server serves the CPU only.
  bool cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL) != nullptr &&
              dlopen("libtvm_runtime_cuda.so", RTLD_NOW | RTLD_GLOBAL) != nullptr;
  // Vulkan models: the project's backend (lib/libatrous_vulkan.so, in bundles of Vulkan models) registers the
  // Vulkan device API; it opens the Vulkan loader only when a client first uses the device.
  bool vulkan = dlopen("libatrous_vulkan.so", RTLD_NOW | RTLD_GLOBAL) != nullptr;
  Log(std::string("devices: cpu") + (cuda ? ", cuda" : " (no NVIDIA driver or no libtvm_runtime_cuda.so)") +
      (vulkan ? ", vulkan" : ""));
  int listener = Listen(o.host, o.port);
  if (!IsLoopback(o.host)) {
    Log("WARNING: listening on " + o.host + ", beyond this machine: whoever reaches port " +
        std::to_string(o.port) + " can run code here as this user" +
        (o.secret.empty() ? "; pass --secret FILE to require a shared secret, or listen on 127.0.0.1 and "
                            "connect through ssh -L"
                          : "; clients must present the shared secret (sent in clear: on untrusted networks "
                            "use ssh -L instead)"));
  }
  Log("listening on " + o.host + ":" + std::to_string(o.port) +
      (o.tracker_host.empty() ? "" : ", tracker " + o.tracker_host + ":" + std::to_string(o.tracker_port)) +
      (o.key.empty() ? "" : ", key " + o.key) + (o.secret.empty() ? "" : ", shared secret required"));
  TrackerLink tracker(o);
  while (true) {
    if (!tracker.Register()) {
      sleep(2);
      continue;
    }
    fd_set ready;
    FD_ZERO(&ready);
    FD_SET(listener, &ready);
    timeval period{2, 0};
    int n = select(listener + 1, &ready, nullptr, nullptr, tracker.Enabled() ? &period : nullptr);
    if (n == 0) {
      tracker.Ping();
      continue;
    }
    if (n < 0) continue;
    int conn = accept(listener, nullptr, nullptr);
    if (conn < 0) continue;
    int yes = 1;
    setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof(yes));
    int timeout = 0;
    // a client that connects and says nothing must not hold the one session slot: 10 s for the handshake
    timeval handshake_limit{10, 0}, none{0, 0};
    setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &handshake_limit, sizeof(handshake_limit));
    if (!Handshake(conn, o, tracker.MatchKey(), &timeout)) {
      close(conn);
      continue;
    }
    setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
    Log("session started");
    RunSession(conn, timeout, o.max_upload_mb);
    Log("session finished");
    if (o.once) break;
    tracker.Renew();
  }
  close(listener);
  return 0;
}
