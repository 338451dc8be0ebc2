#include "context.h"

#include <cstdio>
#include <thread>

namespace lbctl {

namespace {
volatile std::sig_atomic_t g_interrupted = 0;
}  // namespace

void catch_interrupt() {
  std::signal(SIGINT, [](int) { g_interrupted = 1; });
}

bool interrupted() {
  return g_interrupted != 0;
}

void pause_for(double seconds) {
  const auto until = Clock::now() + std::chrono::duration<double>(seconds);
  while (!g_interrupted && Clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

std::string without_comments(std::string text) {
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character, a quote included
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '#' || (c == '/' && i + 1 < text.size() && text[i + 1] == '/')) {
      for (; i < text.size() && text[i] != '\n'; ++i) text[i] = ' ';
    } else if (c == '/' && i + 1 < text.size() && text[i + 1] == '*') {
      const size_t end = text.find("*/", i + 2);
      const size_t stop = end == std::string::npos ? text.size() : end + 2;
      for (; i < stop; ++i) {
        if (text[i] != '\n') text[i] = ' ';
      }
      --i;
    }
  }
  return text;
}

void print_json(const Json& j) {
  std::printf("%s\n", j.dump(2, ' ', false, Json::error_handler_t::replace).c_str());
}

void check(const Json& reply, bool json) {
  if (reply.value("ok", false)) return;
  if (json) print_json(reply);
  std::string why = reply.value("error", std::string("lb-healthd refused the request"));
  if (reply.value("accepted", false))
    why += " (lb-healthd has made and kept the change; lbd has not confirmed it)";
  throw Refused(why);
}

std::pair<std::string, Json> split_endpoint(const std::string& text, const char* what) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size())
    throw Usage(std::string(what) + ": expected ADDR:PORT, found '" + text + "'");
  const std::string port = text.substr(colon + 1);
  if (port.size() > 9 || port.find_first_not_of("0123456789") != std::string::npos)
    throw Usage(std::string(what) + ": the port in '" + text + "' is not a number");
  return {text.substr(0, colon), Json(std::stoll(port))};
}

int run_change(Context& ctx, Json req) {
  if (ctx.wait()) {
    req["wait"] = true;
    req["timeout_ms"] = ctx.wait_ms();
  }
  const Json reply = ctx.call(req, (ctx.wait() ? ctx.wait_ms() : 0) + 10000);
  check(reply, ctx.json());
  if (ctx.json()) {
    print_json(reply);
    return 0;
  }
  const Json changes = reply.value("changes", Json::array());
  if (changes.empty()) std::printf("no change\n");
  for (const Json& c : changes) std::printf("%s\n", c.get<std::string>().c_str());
  if (reply.contains("lbd")) {
    const Json& l = reply["lbd"];
    std::printf("applied by lbd: generation %s, after %s ms\n",
                l.value("generation", Json()).dump().c_str(),
                l.value("waited_ms", Json()).dump().c_str());
  }
  if (!reply.value("persisted", false) && !changes.empty())
    std::printf("note: not persisted (lb-healthd has no state file): a restart forgets it\n");
  return 0;
}

}  // namespace lbctl
