// Flow steering: which instance a packet belongs to.
//
// One table serves both directions. A flow is keyed on the *local* side (the attached
// socket's address: protocol, IP, port) and optionally the remote side. For a packet
// arriving from the wire the local side is its destination; for a packet leaving the
// host it is its source (the mirrored egress key). Lookup is exact-match in O(1): first the
// full 5-tuple (only when such entries exist), then the key with the remote side
// wildcarded. Unmatched traffic passes straight through.
//
// The table has a fixed capacity chosen at creation (open addressing, linear probing,
// backward-shift deletion: no tombstones, no rehash), so adds and removes never allocate
// and never pause the datapath. It is owned by the datapath thread; the engine applies
// control-plane changes between bursts (see Engine::execute).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gaon/packet.h"
#include "gaon/result.h"

namespace gaon {

struct FlowKey {
  uint8_t proto = 0;     // net::kProtoUdp or net::kProtoTcp
  uint8_t family = 0;    // 4 or 6
  uint8_t wildcard = 1;  // 1: the remote side is "any"
  uint8_t pad_ = 0;
  uint16_t local_port = 0;  // host byte order
  uint16_t remote_port = 0;
  uint8_t local_ip[16] = {};  // IPv4 uses the first 4 bytes
  uint8_t remote_ip[16] = {};

  bool operator==(const FlowKey& o) const;

  // "udp:IP:PORT" or "udp:IP:PORT,REMOTE_IP:REMOTE_PORT"; IPv6 addresses in brackets
  // ("udp:[::1]:53"). Errors name what is wrong.
  static Result<FlowKey> parse(std::string_view text);
  std::string to_string() const;
};
static_assert(sizeof(FlowKey) == 40);

// Keys a parsed packet can match, given its direction.
FlowKey flow_key_exact(const Packet& p);

struct FlowEntry {
  FlowKey key;
  uint32_t instance = kNoInstance;
  uint32_t flow_id = 0;
};

class FlowTable {
 public:
  // `capacity` flows at most; the slot array is twice that, rounded up to a power of two.
  static Result<std::unique_ptr<FlowTable>> create(uint32_t capacity);

  // Adds a flow; fails when the key is already held (by any instance) or the table is full.
  Result<uint32_t> add(const FlowKey& key, uint32_t instance);
  bool remove(const FlowKey& key);
  // Removes every flow of `instance`; returns how many.
  size_t remove_instance(uint32_t instance);

  // Datapath lookup for a parsed packet: exact 5-tuple first, then the wildcard key.
  const FlowEntry* lookup(const Packet& p) const;
  const FlowEntry* find(const FlowKey& key) const;

  size_t size() const { return size_; }
  uint32_t capacity() const { return capacity_; }
  std::vector<FlowEntry> entries() const;

 private:
  struct Slot {
    FlowEntry e;
    bool used = false;
  };
  FlowTable() = default;
  static uint64_t hash(const FlowKey& k);
  const FlowEntry* probe(const FlowKey& k) const;

  std::vector<Slot> slots_;
  uint64_t mask_ = 0;
  uint32_t capacity_ = 0;
  size_t size_ = 0;
  size_t exact_entries_ = 0;  // flows with a concrete remote side
  uint32_t next_flow_id_ = 1;
};

}  // namespace gaon
