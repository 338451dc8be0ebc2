// The live pool lb-healthd sends lbd (policy/live_pool.h): admin state x health -> BackendState,
// fail_closed / fail_open, maint keep / drop, and the ServiceUpdate message.

#include "live_pool.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace lb::health {
namespace {

using cfg::AdminState;
using cfg::AllDownPolicy;
using cfg::MaintPolicy;
using shm::BackendState;

BackendState state_of(const LivePool& p, size_t i) {
  return static_cast<BackendState>(p.entries.at(i).state);
}

TEST(LivePool, AdminTimesHealth) {
  struct Row {
    AdminState admin;
    Health health;
    MaintPolicy maint;
    BackendState want;
  };
  const Row rows[] = {
      {AdminState::kReady, Health::kUp, MaintPolicy::kKeep, BackendState::kActive},
      {AdminState::kReady, Health::kDown, MaintPolicy::kKeep, BackendState::kDraining},
      {AdminState::kDrain, Health::kUp, MaintPolicy::kKeep, BackendState::kDraining},
      {AdminState::kDrain, Health::kDown, MaintPolicy::kKeep, BackendState::kDraining},
      {AdminState::kMaint, Health::kUp, MaintPolicy::kKeep, BackendState::kDraining},
      {AdminState::kMaint, Health::kDown, MaintPolicy::kKeep, BackendState::kDraining},
      {AdminState::kMaint, Health::kUp, MaintPolicy::kDrop, BackendState::kStopped},
      {AdminState::kMaint, Health::kDown, MaintPolicy::kDrop, BackendState::kStopped},
      {AdminState::kReady, Health::kUp, MaintPolicy::kDrop, BackendState::kActive},
      {AdminState::kDrain, Health::kUp, MaintPolicy::kDrop, BackendState::kDraining},
  };
  for (const Row& r : rows) {
    EXPECT_EQ(backend_state(r.admin, r.health, r.maint), r.want)
        << cfg::to_string(r.admin) << " " << to_string(r.health) << " " << cfg::to_string(r.maint);
  }
}

std::vector<BackendView> three(Health a, Health b, Health c) {
  return {{0x0a14000b, 8080, 1, AdminState::kReady, a},
          {0x0a14000c, 8080, 2, AdminState::kReady, b},
          {0x0a14000d, 8081, 0, AdminState::kReady, c}};
}

TEST(LivePool, EntriesCarryAddressPortWeight) {
  const LivePool p = build_pool(three(Health::kUp, Health::kDown, Health::kUp),
                                AllDownPolicy::kFailClosed, MaintPolicy::kKeep);
  ASSERT_EQ(p.entries.size(), 3u);
  EXPECT_EQ(p.entries[0].ip, 0x0a14000bu);
  EXPECT_EQ(p.entries[1].weight, 2);
  EXPECT_EQ(p.entries[2].port, 8081);
  EXPECT_EQ(p.entries[2].weight, 0);
  EXPECT_EQ(state_of(p, 0), BackendState::kActive);
  EXPECT_EQ(state_of(p, 1), BackendState::kDraining);
  EXPECT_EQ(state_of(p, 2), BackendState::kActive);
  EXPECT_EQ(p.active, 2u);
  EXPECT_FALSE(p.fail_open);
}

TEST(LivePool, AllDownFailClosedSendsAsIs) {
  const LivePool p = build_pool(three(Health::kDown, Health::kDown, Health::kDown),
                                AllDownPolicy::kFailClosed, MaintPolicy::kKeep);
  EXPECT_EQ(p.active, 0u);
  EXPECT_FALSE(p.fail_open);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(state_of(p, i), BackendState::kDraining);
}

TEST(LivePool, AllDownFailOpenSendsAllButMaintActive) {
  std::vector<BackendView> v = three(Health::kDown, Health::kDown, Health::kDown);
  v.push_back({0x0a14000e, 80, 1, AdminState::kMaint, Health::kUp});
  v.push_back({0x0a14000f, 80, 1, AdminState::kDrain, Health::kDown});
  const LivePool keep = build_pool(v, AllDownPolicy::kFailOpen, MaintPolicy::kKeep);
  EXPECT_TRUE(keep.fail_open);
  EXPECT_EQ(keep.active, 4u);
  for (size_t i : {size_t{0}, size_t{1}, size_t{2}, size_t{4}})
    EXPECT_EQ(state_of(keep, i), BackendState::kActive) << i;
  EXPECT_EQ(state_of(keep, 3), BackendState::kDraining);
  const LivePool drop = build_pool(v, AllDownPolicy::kFailOpen, MaintPolicy::kDrop);
  EXPECT_EQ(state_of(drop, 3), BackendState::kStopped);
}

TEST(LivePool, FailOpenOnlyWhenNothingIsActive) {
  const LivePool p = build_pool(three(Health::kDown, Health::kUp, Health::kDown),
                                AllDownPolicy::kFailOpen, MaintPolicy::kKeep);
  EXPECT_FALSE(p.fail_open);
  EXPECT_EQ(p.active, 1u);
  EXPECT_EQ(state_of(p, 0), BackendState::kDraining);
}

TEST(LivePool, FailOpenWithOnlyMaintBackendsStaysEmpty) {
  const std::vector<BackendView> v = {{1, 1, 1, AdminState::kMaint, Health::kUp}};
  const LivePool p = build_pool(v, AllDownPolicy::kFailOpen, MaintPolicy::kKeep);
  EXPECT_FALSE(p.fail_open);
  EXPECT_EQ(p.active, 0u);
  const LivePool none = build_pool({}, AllDownPolicy::kFailOpen, MaintPolicy::kKeep);
  EXPECT_TRUE(none.entries.empty());
  EXPECT_FALSE(none.fail_open);
}

TEST(LivePool, Equality) {
  const auto v = three(Health::kUp, Health::kUp, Health::kUp);
  const LivePool a = build_pool(v, AllDownPolicy::kFailClosed, MaintPolicy::kKeep);
  LivePool b = a;
  EXPECT_TRUE(a == b);
  b.entries[1].state = static_cast<uint8_t>(BackendState::kDraining);
  EXPECT_FALSE(a == b);
}

TEST(LivePool, FillUpdate) {
  cfg::ServiceConfig s;
  s.name = "web";
  s.vip = 0x0a0a0064;
  s.port = 80;
  s.scheduler = cfg::Scheduler::kLeastConnections;
  const LivePool p = build_pool(three(Health::kUp, Health::kDown, Health::kUp),
                                AllDownPolicy::kFailClosed, MaintPolicy::kKeep);
  auto u = std::make_unique<shm::ServiceUpdate>();
  std::memset(u.get(), 0xff, sizeof *u);
  fill_update(*u, s, p, 77);
  EXPECT_EQ(u->generation, 77u);
  EXPECT_STREQ(u->name, "web");
  EXPECT_EQ(u->vip, 0x0a0a0064u);
  EXPECT_EQ(u->port, 80);
  EXPECT_EQ(u->scheduler, 3);
  EXPECT_EQ(u->flags, 0);
  ASSERT_EQ(u->backend_count, 3u);
  EXPECT_EQ(u->backends[1].state, static_cast<uint8_t>(BackendState::kDraining));
  EXPECT_EQ(u->backends[3].ip, 0u);  // the rest is zeroed

  fill_removal(*u, "old", 78);
  EXPECT_EQ(u->generation, 78u);
  EXPECT_STREQ(u->name, "old");
  EXPECT_EQ(u->flags, shm::kServiceRemoved);
  EXPECT_EQ(u->backend_count, 0u);
}

TEST(LivePool, NamesOfStates) {
  EXPECT_STREQ(to_string(BackendState::kActive), "active");
  EXPECT_STREQ(to_string(BackendState::kDraining), "draining");
  EXPECT_STREQ(to_string(BackendState::kStopped), "stopped");
}

}  // namespace
}  // namespace lb::health
