// The `dataplane` group: workers, ports, flows, retry, idle, full-NAT addresses (parser.h).

#include "parser.h"

#include <algorithm>
#include <charconv>

namespace lb::cfg::detail {

namespace {

uint32_t prefix_mask(unsigned prefix_len) {
  return prefix_len == 0 ? 0 : ~uint32_t{0} << (32 - prefix_len);
}

std::string cidr(uint32_t network, unsigned prefix_len) {
  return format_ipv4(network) + "/" + std::to_string(prefix_len);
}

}  // namespace

DataplaneConfig Parser::parse_dataplane(const Setting& dp) {
  check_keys(dp, schema::Group::kDataplane);
  DataplaneConfig out;
  out.line = static_cast<int>(dp.getSourceLine());
  out.workers = integer_as<uint32_t>(require(dp, "workers"), kMinWorkers, kMaxWorkers);
  optional_integer(dp, "mbufs", out.mbufs, kMinMbufs, kMaxMbufs);
  parse_ports(as_list(require(dp, "ports")), out);
  if (const Setting* flows = find(dp, "flows")) out.flows = parse_flows(as_group(*flows));
  if (const Setting* retry = find(dp, "retry")) out.retry = parse_retry(as_group(*retry));
  if (const Setting* s = find(dp, "miss_policy")) {
    out.miss_policy = enumeration<MissPolicy>(
        *s, "miss_policy", {{"drop", MissPolicy::kDrop}, {"rst", MissPolicy::kRst}});
  }
  if (const Setting* s = find(dp, "no_backend_policy")) {
    out.no_backend_policy = enumeration<NoBackendPolicy>(
        *s, "no_backend_policy",
        {{"rst", NoBackendPolicy::kRst}, {"drop", NoBackendPolicy::kDrop}});
  }
  optional_integer(dp, "maglev_hash_seed", out.maglev_hash_seed, 0, INT64_MAX);
  if (const Setting* idle = find(dp, "idle")) out.idle = parse_idle(as_group(*idle));
  if (const Setting* s = find(dp, "fullnat_addresses")) parse_fullnat_addresses(*s, out);
  if (const Setting* s = find(dp, "fullnat_ports")) {
    if ((s->getType() != Setting::TypeArray && s->getType() != Setting::TypeList) ||
        s->getLength() != 2)
      fail(*s, "expected [first, last] (e.g. [1024, 65535])");
    out.fullnat_port_first = static_cast<uint16_t>(as_integer((*s)[0], 1, 65535));
    out.fullnat_port_last = static_cast<uint16_t>(as_integer((*s)[1], 1, 65535));
    // Every worker owns the ports p with p % workers == its index: each needs one at least.
    if (uint32_t{out.fullnat_port_last} + 1 < uint32_t{out.fullnat_port_first} + out.workers) {
      fail(*s, "ports " + std::to_string(out.fullnat_port_first) + ".." +
                   std::to_string(out.fullnat_port_last) + " leave some of the " +
                   std::to_string(out.workers) + " workers no port");
    }
  }
  return out;
}

IdleConfig Parser::parse_idle(const Setting& g) const {
  check_keys(g, schema::Group::kIdle);
  IdleConfig out;
  if (const Setting* s = find(g, "mode")) {
    out.mode =
        enumeration<IdleMode>(*s, "mode", {{"poll", IdleMode::kPoll}, {"sleep", IdleMode::kSleep}});
  }
  optional_integer(g, "after_empty_polls", out.after_empty_polls, 1, kMaxIdleAfterPolls);
  optional_integer(g, "max_sleep_us", out.max_sleep_us, 1, kMaxIdleSleepUs);
  return out;
}

void Parser::parse_fullnat_addresses(const Setting& list, DataplaneConfig& out) {
  if (list.getType() != Setting::TypeArray && list.getType() != Setting::TypeList)
    fail(list, "expected a list of IPv4 addresses");
  if (static_cast<uint32_t>(list.getLength()) > limits::kMaxFullnatAddresses) {
    fail(list, "at most " + std::to_string(limits::kMaxFullnatAddresses) +
                   " full-NAT addresses, found " + std::to_string(list.getLength()));
  }
  for (int i = 0; i < list.getLength(); ++i) {
    const Setting& s = list[i];
    const uint32_t addr = as_address(s);
    for (uint32_t earlier : out.fullnat_addresses)
      if (earlier == addr) fail(s, format_ipv4(addr) + " is listed twice");
    bool in_subnet = false;
    for (const PortConfig& port : out.ports) {
      if (!port.in_subnet(addr)) continue;
      in_subnet = true;
      check_host_in_subnet(s, port, addr);
    }
    if (!in_subnet) {
      fail(s, format_ipv4(addr) +
                  " is in no port's subnet: lbd answers ARP for a full-NAT address on the "
                  "port whose subnet holds it (the backends')");
    }
    out.fullnat_addresses.push_back(addr);
    fullnat_settings_.push_back(&s);
  }
}

void Parser::parse_ports(const Setting& ports, DataplaneConfig& out) {
  const int count = ports.getLength();
  if (count < kMinPorts || count > kMaxPorts) {
    fail(ports, "expected " + std::to_string(kMinPorts) + ".." + std::to_string(kMaxPorts) +
                    " ports, found " + std::to_string(count));
  }
  for (int i = 0; i < count; ++i) {
    PortSettings where;
    PortConfig port = parse_port(as_group(ports[i]), where);
    check_port_against_earlier(port, where, out.ports);
    out.ports.push_back(std::move(port));
    port_settings_.push_back(where);
  }
}

PortConfig Parser::parse_port(const Setting& p, PortSettings& where) const {
  check_keys(p, schema::Group::kPort);
  PortConfig port;
  port.line = static_cast<int>(p.getSourceLine());
  where.group.setting = &p;
  where.name.setting = &require(p, "name");
  port.name = as_name(*where.name.setting);
  where.device.setting = &require(p, "device");
  port.device = as_string(*where.device.setting);
  if (port.device.empty()) fail(where.device, "device must not be empty");

  where.ip.setting = &require(p, "ip");
  const Setting& ip = *where.ip.setting;
  const std::string text = as_string(ip);
  const size_t slash = text.find('/');
  if (slash == std::string::npos) {
    fail(ip, "expected address/prefix-length (e.g. 10.0.0.1/24), found " + quote(text));
  }
  const std::optional<uint32_t> addr = parse_ipv4(text.substr(0, slash));
  if (!addr) fail(ip, "malformed IPv4 address " + quote(text.substr(0, slash)));
  const std::string prefix_text = text.substr(slash + 1);
  unsigned prefix = 0;
  const auto [end, ec] =
      std::from_chars(prefix_text.data(), prefix_text.data() + prefix_text.size(), prefix);
  if (ec != std::errc{} || end != prefix_text.data() + prefix_text.size() || prefix < 1 ||
      prefix > 32 || (prefix_text.size() > 1 && prefix_text[0] == '0')) {
    fail(ip, "prefix length must be 1..32, found " + quote(prefix_text));
  }
  if (std::optional<std::string> reason = non_unicast_reason(*addr)) {
    fail(ip, format_ipv4(*addr) + " " + *reason);
  }
  port.ip = *addr;
  port.prefix_len = static_cast<uint8_t>(prefix);
  check_host_in_subnet(ip, port, *addr);

  if (const Setting* gw = find(p, "gateway")) {
    const uint32_t gateway = as_address(*gw);
    if (!port.in_subnet(gateway)) {
      fail(*gw, "gateway " + format_ipv4(gateway) + " is outside the port's subnet " +
                    cidr(port.ip & prefix_mask(prefix), prefix));
    }
    if (gateway == port.ip) fail(*gw, "gateway is the port's own address");
    check_host_in_subnet(*gw, port, gateway);
    port.gateway = gateway;
  }
  if (const Setting* s = find(p, "rx_descriptors")) port.rx_descriptors = descriptors(*s);
  if (const Setting* s = find(p, "tx_descriptors")) port.tx_descriptors = descriptors(*s);
  if (const Setting* s = find(p, "vip_arp")) {
    port.vip_arp = enumeration<VipArp>(
        *s, "vip_arp",
        {{"subnet", VipArp::kSubnet}, {"all", VipArp::kAll}, {"none", VipArp::kNone}});
  }
  return port;
}

// On subnets with a network and a broadcast address (/30 and wider), neither is a host.
void Parser::check_host_in_subnet(const Setting& s, const PortConfig& port, uint32_t addr) const {
  if (port.prefix_len > 30) return;
  const uint32_t mask = prefix_mask(port.prefix_len);
  const std::string subnet = cidr(port.ip & mask, port.prefix_len);
  if ((addr & ~mask) == 0) fail(s, format_ipv4(addr) + " is the network address of " + subnet);
  if ((addr & ~mask) == ~mask) {
    fail(s, format_ipv4(addr) + " is the broadcast address of " + subnet);
  }
}

uint16_t Parser::descriptors(const Setting& s) const {
  const int64_t n = as_integer(s, kMinDescriptors, kMaxDescriptors);
  // The PMDs size their rings in powers of two; anything else is rounded or refused by them.
  if ((n & (n - 1)) != 0) fail(s, "value " + std::to_string(n) + " is not a power of two");
  return static_cast<uint16_t>(n);
}

void Parser::check_port_against_earlier(const PortConfig& port, const PortSettings& where,
                                        const std::vector<PortConfig>& earlier) const {
  // DPDK identifies a device by what precedes the first comma ("0000:01:00.0",
  // "net_af_packet0"); the rest are arguments, so two ports cannot differ only there.
  const auto device_id = [](const std::string& device) {
    return device.substr(0, device.find(','));
  };
  for (size_t j = 0; j < earlier.size(); ++j) {
    const PortConfig& other = earlier[j];
    const PortSettings& other_where = port_settings_[j];
    if (other.name == port.name) {
      fail(where.name, "duplicate port name " + quote(port.name) + " (first at line " +
                           std::to_string(other_where.name.line()) + ", " +
                           other_where.group.path() + ")");
    }
    if (device_id(other.device) == device_id(port.device)) {
      fail(where.device, "device " + quote(device_id(port.device)) + " is already used by port " +
                             quote(other.name) + " (line " +
                             std::to_string(other_where.device.line()) + ")");
    }
    const unsigned shorter = std::min(port.prefix_len, other.prefix_len);
    if (((port.ip ^ other.ip) & prefix_mask(shorter)) == 0) {
      fail(where.ip, "subnet " + cidr(port.ip & prefix_mask(port.prefix_len), port.prefix_len) +
                         " overlaps subnet " +
                         cidr(other.ip & prefix_mask(other.prefix_len), other.prefix_len) +
                         " of port " + quote(other.name) + " (line " +
                         std::to_string(other_where.ip.line()) + ")");
    }
  }
}

FlowConfig Parser::parse_flows(const Setting& f) const {
  check_keys(f, schema::Group::kFlows);
  FlowConfig out;
  optional_integer(f, "capacity", out.capacity, kMinFlowCapacity, kMaxFlowCapacity);
  optional_integer(f, "tcp_syn_timeout", out.tcp_syn_timeout, kMinTimeoutS, kMaxTimeoutS);
  optional_integer(f, "tcp_established_timeout", out.tcp_established_timeout, kMinTimeoutS,
                   kMaxTimeoutS);
  optional_integer(f, "tcp_fin_timeout", out.tcp_fin_timeout, kMinTimeoutS, kMaxTimeoutS);
  optional_integer(f, "tcp_closed_timeout", out.tcp_closed_timeout, kMinTimeoutS, kMaxTimeoutS);
  optional_integer(f, "syn_budget", out.syn_budget, 1, 100);
  optional_integer(f, "tcp_syn_timeout_pressure", out.tcp_syn_timeout_pressure, kMinTimeoutS,
                   kMaxTimeoutS);
  optional_integer(f, "stateless_rate", out.stateless_rate, 1, 100000000);
  optional_integer(f, "fullnat_port_hold", out.fullnat_port_hold, 0, 3600);
  if (const Setting* s = find(f, "syn_flood_policy"))
    out.syn_flood_policy =
        enumeration<SynFloodPolicy>(*s, "syn_flood_policy",
                                    {{"drop-new", SynFloodPolicy::kDropNew},
                                     {"evict-embryonic", SynFloodPolicy::kEvictEmbryonic}});
  if (const Setting* s = find(f, "persist")) out.persist = as_bool(*s);
  if (const Setting* s = find(f, "directory")) {
    out.directory = as_string(*s);
    if (out.directory.empty() || out.directory[0] != '/')
      fail(*s, "expected an absolute directory path (e.g. \"/dev/hugepages\"), found " +
                   quote(out.directory));
    while (out.directory.size() > 1 && out.directory.back() == '/') out.directory.pop_back();
  }
  return out;
}

RetryConfig Parser::parse_retry(const Setting& r) const {
  check_keys(r, schema::Group::kRetry);
  RetryConfig out;
  if (const Setting* s = find(r, "on_rst")) out.on_rst = as_bool(*s);
  optional_integer(r, "syn_timeout_ms", out.syn_timeout_ms, kMinSynRetryMs, kMaxSynRetryMs);
  optional_integer(r, "max_retries", out.max_retries, 0, kMaxRetries);
  return out;
}

}  // namespace lb::cfg::detail
