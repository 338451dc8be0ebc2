// lb-backend: a small HTTP server to stand behind lbd in tests and demos, with a health path
// that can be made to fail, hang or drop connections on demand. See --help.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <httplib.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <thread>

#include "lb_version.h"

namespace {

constexpr const char* kDescription = R"(lb-backend: an HTTP/1.1 test backend for lbd and lb-healthd.

  GET  /              200, body "<name>\n" (any other path too); with ?delay_ms=N (at most
                      10000) the answer comes N ms later
  GET  /healthcheck   200 "ok <name>" while healthy, else 503 "fail <name>"
  Every response carries the headers "X-Backend: <name>" and "X-Peer: <address>" (the
  connection's source as this server sees it: the client's in dnat and tunnel modes, lbd's
  full-NAT address in fullnat).

Control (POST with a body, even an empty one: curl -d '' URL; cpp-httplib 0.11 refuses a POST
without Content-Length. Answered even while the health path misbehaves):
  /control/health/fail   /healthcheck answers 503
  /control/health/ok     /healthcheck answers 200 again
  /control/hang          /healthcheck accepts the connection but never answers (until
                         /control/unhang, or until the client gives up)
  /control/unhang        stop hanging
  /control/close         every request except /control/* gets its connection closed without an
                         answer (until /control/ok)
  /control/ok            all of the above off: healthy, not hanging, not closing
  GET /control/state     "healthy=1 hung=0 closing=0 requests=N checks=N"

Connections: keep-alive for as long as the client wants (no cap on requests per connection,
closed after --keep-alive-timeout idle seconds, default 300). Each open connection holds one of
the --threads worker threads for its whole life (cpp-httplib's model), so --threads (default 512)
is the number of connections served at once; connections beyond it wait for a free thread.

Signals: SIGUSR1 = health/fail, SIGUSR2 = health/ok, SIGHUP = ok, SIGTERM/SIGINT = stop.
With --port 0 the kernel picks the port. Once listening, one line goes to stdout:
  listening on ADDR:PORT)";

std::atomic<bool> g_healthy{true};
std::atomic<bool> g_hung{false};
std::atomic<bool> g_closing{false};
std::atomic<bool> g_stopping{false};
std::atomic<bool> g_listen_returned{false};
std::atomic<uint64_t> g_requests{0};
std::atomic<uint64_t> g_checks{0};

void all_ok() {
  g_healthy = true;
  g_hung = false;
  g_closing = false;
}

// httplib hands a handler no socket. The request's two endpoints identify it among our fds.
int find_socket(const httplib::Request& req) {
  for (int fd = 3; fd < 65536; ++fd) {
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0) {
      if (errno == EBADF) {
        // fds are dense in practice, but a hole does not mean the end: look a little further.
        bool more = false;
        for (int probe = fd + 1; probe < fd + 64; ++probe) {
          if (fcntl(probe, F_GETFD) != -1) {
            more = true;
            break;
          }
        }
        if (!more) return -1;
      }
      continue;
    }
    char host[INET6_ADDRSTRLEN] = {};
    int port = 0;
    if (peer.ss_family == AF_INET) {
      const auto* a = reinterpret_cast<const sockaddr_in*>(&peer);
      inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
      port = ntohs(a->sin_port);
    } else if (peer.ss_family == AF_INET6) {
      const auto* a = reinterpret_cast<const sockaddr_in6*>(&peer);
      inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
      port = ntohs(a->sin6_port);
    } else {
      continue;
    }
    if (port == req.remote_port && req.remote_addr == host) return fd;
  }
  return -1;
}

// Hold the request until unhang, stop, or the client closes its end (a checker that timed out),
// so that a hung request does not hold one of the server's threads forever.
void hang(const httplib::Request& req) {
  const int fd = find_socket(req);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(10);
  while (g_hung && !g_stopping && std::chrono::steady_clock::now() < deadline) {
    if (fd >= 0) {
      pollfd p{fd, POLLRDHUP, 0};
      if (::poll(&p, 1, 20) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0) {
        shutdown(fd, SHUT_RDWR);
        return;
      }
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
}

void text(httplib::Response& res, int status, const std::string& body) {
  res.status = status;
  res.set_content(body, "text/plain");
}

}  // namespace

static int run(int argc, char** argv) {
  CLI::App app{kDescription, "lb-backend"};
  std::string name;
  std::string listen = "127.0.0.1";
  int port = 0;
  int threads = 512;
  int keep_alive_s = 300;
  app.add_option("--name", name, "name in bodies and the X-Backend header")->required();
  app.add_option("--listen", listen, "address to listen on (default 127.0.0.1)");
  app.add_option("--port", port, "TCP port; 0 lets the kernel choose")
      ->required()
      ->check(CLI::Range(0, 65535));
  // At most 1000: cpp-httplib 0.11 waits on its sockets with select(), which stops at fd 1024.
  app.add_option("--threads", threads,
                 "worker threads = connections served at once (default 512, at most 1000)")
      ->check(CLI::Range(1, 1000));
  app.add_option("--keep-alive-timeout", keep_alive_s,
                 "seconds an idle keep-alive connection stays open (default 300)")
      ->check(CLI::Range(1, 86400));
  app.set_version_flag("--version", "lb-backend " LB_VERSION);
  CLI11_PARSE(app, argc, argv);

  // Signals go to one thread that waits for them; every other thread has them blocked.
  sigset_t set;
  sigemptyset(&set);
  for (const int sig : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2}) sigaddset(&set, sig);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  httplib::Server svr;
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  svr.set_default_headers({{"X-Backend", name}});
  // Long-lived keep-alive connections, as the end-to-end tests (pinning, drain, 200 connections
  // across an lbd restart) need: cpp-httplib would otherwise close each connection after 5
  // requests or 5 idle seconds.
  svr.set_keep_alive_max_count(std::numeric_limits<size_t>::max());
  svr.set_keep_alive_timeout(keep_alive_s);
  // Headers and body go out in separate writes: without TCP_NODELAY, Nagle holds the body for
  // the client's delayed ACK (~40 ms a request on keep-alive connections).
  svr.set_tcp_nodelay(true);
  svr.set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
    ++g_requests;
    res.set_header("X-Peer", req.remote_addr);
    if (g_closing && req.path.rfind("/control/", 0) != 0) {
      if (const int fd = find_socket(req); fd >= 0) shutdown(fd, SHUT_RDWR);
      return httplib::Server::HandlerResponse::Handled;  // the answer goes nowhere
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  svr.Get("/healthcheck", [&name](const httplib::Request& req, httplib::Response& res) {
    ++g_checks;
    if (g_hung) {
      hang(req);
      if (g_hung) return;  // the client left
    }
    if (g_healthy) {
      text(res, 200, "ok " + name + "\n");
    } else {
      text(res, 503, "fail " + name + "\n");
    }
  });
  struct Control {
    const char* path;
    void (*act)();
    const char* state;
  };
  static constexpr Control kControls[] = {
      {"/control/health/fail", [] { g_healthy = false; }, "health fail"},
      {"/control/health/ok", [] { g_healthy = true; }, "health ok"},
      {"/control/hang", [] { g_hung = true; }, "hanging"},
      {"/control/unhang", [] { g_hung = false; }, "not hanging"},
      {"/control/close", [] { g_closing = true; }, "closing connections"},
      {"/control/ok", [] { all_ok(); }, "ok"},
  };
  for (const Control& c : kControls) {
    svr.Post(c.path, [&name, &c](const httplib::Request&, httplib::Response& res) {
      c.act();
      text(res, 200, name + ": " + c.state + "\n");
    });
  }
  svr.Get("/control/state", [](const httplib::Request&, httplib::Response& res) {
    text(res, 200,
         "healthy=" + std::to_string(g_healthy ? 1 : 0) + " hung=" +
             std::to_string(g_hung ? 1 : 0) + " closing=" + std::to_string(g_closing ? 1 : 0) +
             " requests=" + std::to_string(g_requests.load()) +
             " checks=" + std::to_string(g_checks.load()) + "\n");
  });
  svr.Get(".*", [&name](const httplib::Request& req, httplib::Response& res) {
    // ?delay_ms=N (at most 10 s): a response still in flight when the test acts on lbd.
    if (req.has_param("delay_ms")) {
      const long ms = std::strtol(req.get_param_value("delay_ms").c_str(), nullptr, 10);
      if (ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(ms < 10000 ? ms : 10000));
    }
    // ?bytes=N (at most 16 MiB): a body of N bytes, for downloads that cross the path MTU.
    if (req.has_param("bytes")) {
      const long n = std::strtol(req.get_param_value("bytes").c_str(), nullptr, 10);
      if (n > 0 && n <= (16L << 20)) {
        res.set_content(std::string(static_cast<size_t>(n), 'x'), "application/octet-stream");
        return;
      }
    }
    text(res, 200, name + "\n");
  });

  // Any other POST: its body's size, for uploads that cross the path MTU (at most 16 MiB).
  svr.set_payload_max_length(16 << 20);
  svr.Post(".*", [&name](const httplib::Request& req, httplib::Response& res) {
    text(res, 200, name + " " + std::to_string(req.body.size()) + "\n");
  });

  int bound = port;
  if (port == 0) {
    bound = svr.bind_to_any_port(listen);
    if (bound < 0) bound = 0;
  } else if (!svr.bind_to_port(listen, port)) {
    bound = 0;
  }
  if (bound <= 0) {
    std::fprintf(stderr, "lb-backend: cannot listen on %s:%d: %s\n", listen.c_str(), port,
                 std::strerror(errno));
    return 1;
  }
  std::printf("listening on %s:%d\n", listen.c_str(), bound);
  std::fflush(stdout);

  std::thread signals([&svr, set] {
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      switch (sig) {
        case SIGUSR1:
          g_healthy = false;
          break;
        case SIGUSR2:
          g_healthy = true;
          break;
        case SIGHUP:
          all_ok();
          break;
        default:  // SIGTERM, SIGINT
          g_stopping = true;
          // A stop() before listen has started is lost: repeat until listen has returned.
          for (int i = 0; i < 500 && !g_listen_returned; ++i) {
            svr.stop();
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
          }
          return;
      }
    }
  });
  const bool ok = svr.listen_after_bind();
  g_listen_returned = true;
  if (!g_stopping) {  // listen failed on its own: let the signal thread go
    g_stopping = true;
    kill(getpid(), SIGTERM);  // process-directed: the signal thread takes it
  }
  signals.join();
  return ok || g_stopping ? 0 : 1;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lb-backend: %s\n", e.what());
    return 1;
  }
}
