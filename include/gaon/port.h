// Port: where frames enter and leave the engine. Every kind delivers whole Ethernet
// frames, so an ikernel never knows which kind runs it.
//
//   rx_burst(out)  fills up to out.size() packets (allocated from the engine's pool) and
//                  returns how many.
//   tx_burst(pkts) takes ownership of the first n packets it returns (sent or queued and
//                  freed by the port); the caller still owns the rest.
//   rx_drained()   true when the last rx_burst emptied its source (it returned fewer than
//                  asked and nothing more was waiting); lets an event-driven loop block
//                  right away instead of polling once more to find nothing. Ports that
//                  cannot tell return false.
//   stats()        JSON; every kind includes "rx" and "tx" (frames delivered to the engine,
//                  sent), "rx_dropped" (frames lost on their way in, before the engine saw
//                  them, by reason) and "tx_dropped" (frames tx_burst took but could not
//                  send, by reason): what tx_burst took = tx + the tx_dropped.
//   gaps()     see below
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include <nlohmann/json.hpp>

#include "gaon/packet.h"

namespace gaon {

class Port {
 public:
  virtual ~Port() = default;
  virtual uint32_t rx_burst(std::span<Packet*> out) = 0;
  virtual uint32_t tx_burst(std::span<Packet*> pkts) = 0;
  virtual std::string name() const = 0;
  virtual bool rx_drained() const { return false; }
  virtual nlohmann::json stats() const { return nlohmann::json::object(); }
  // How many times the engine's view may have a gap: frames of attached flows went past it
  // (a steering program's lease lapsed while gaond stalled), or the application behind the
  // port lost its state (it refused a datagram: restarted or gone). When it moves, the
  // engine tells every instance (IKernel::on_gap) before the next frames reach them.
  virtual uint64_t gaps() const { return 0; }
};

}  // namespace gaon
