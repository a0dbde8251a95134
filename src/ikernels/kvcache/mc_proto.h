// The memcached protocol as kvcache needs it, over UDP: the 8-byte frame header, then
// ASCII or binary requests and responses. Pure functions over byte spans: nothing is
// allocated, nothing is read outside the span, keys are views into the datagram.
//
// Requests are classified by what they can do to memcached's data:
//   get      ASCII get/gets, binary GET/GETQ/GETK/GETKQ: may be served from the cache
//   write    changes the listed keys (set add replace append prepend cas delete incr decr
//            touch gat gats, meta ms md ma mg; binary writes and their quiet forms)
//   flush    flush_all / FLUSH(Q): changes every key
//   read     cannot change data (stats, version, verbosity, mn, quit, ...)
//   unknown  anything else, including what does not parse: may change anything, so the
//            cache treats it like a flush (it never guesses)
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string_view>

namespace gaon::kv {

inline constexpr size_t kUdpHeader = 8;
inline constexpr size_t kBinHeader = 24;
inline constexpr size_t kMaxKeys = 24;  // keys per request kvcache tracks
inline constexpr size_t kMemcachedMaxKey = 250;
inline constexpr size_t kUdpMaxPayload = 1400;  // memcached's UDP datagram payload limit

struct UdpHeader {
  uint16_t req_id = 0;
  uint16_t seq = 0;
  uint16_t total = 0;
  uint16_t reserved = 0;
};
bool read_udp_header(std::span<const uint8_t> payload, UdpHeader& h);
void write_udp_header(uint8_t* p, uint16_t req_id);  // seq 0, total 1, reserved 0

enum class Proto : uint8_t { ascii, binary };
enum class Kind : uint8_t { get, write, flush, read, unknown };

namespace bin {
inline constexpr uint8_t kReq = 0x80, kRes = 0x81;
enum Op : uint8_t {
  GET = 0x00,
  SET = 0x01,
  ADD = 0x02,
  REPLACE = 0x03,
  DELETE = 0x04,
  INCR = 0x05,
  DECR = 0x06,
  QUIT = 0x07,
  FLUSH = 0x08,
  GETQ = 0x09,
  NOOP = 0x0a,
  VERSION = 0x0b,
  GETK = 0x0c,
  GETKQ = 0x0d,
  APPEND = 0x0e,
  PREPEND = 0x0f,
  STAT = 0x10,
  SETQ = 0x11,
  ADDQ = 0x12,
  REPLACEQ = 0x13,
  DELETEQ = 0x14,
  INCRQ = 0x15,
  DECRQ = 0x16,
  QUITQ = 0x17,
  FLUSHQ = 0x18,
  APPENDQ = 0x19,
  PREPENDQ = 0x1a,
  VERBOSITY = 0x1b,
  TOUCH = 0x1c,
  GAT = 0x1d,
  GATQ = 0x1e,
  GATK = 0x23,
  GATKQ = 0x24,
};
}  // namespace bin

// Why a request could not be served (counted by kvcache; the request still passes).
enum class ReqIssue : uint8_t {
  none,
  short_datagram,  // no room for the frame header
  multi_datagram,  // a request in several datagrams
  empty,           // nothing after the frame header
  no_line_end,     // ASCII command line without "\r\n"
  unusual_form,    // extra spaces, bare "\n", trailing bytes: memcached copes, we pass
  too_many_keys,
  key_too_long,
  bad_binary,        // truncated or inconsistent binary header
  several_commands,  // more than one command in a datagram
  count_,
};
std::string_view to_string(ReqIssue r);

struct Request {
  Proto proto = Proto::ascii;
  Kind kind = Kind::unknown;
  ReqIssue issue = ReqIssue::none;  // for get: servable only when none
  bool noreply = false;             // a write that will not be acknowledged
  bool meta = false;                // an ASCII meta command (mg ms md ma mn me)
  bool cas = false;                 // ASCII gets (the reply carries the cas)
  // binary get
  uint8_t opcode = 0;
  uint32_t opaque = 0;
  // write: the exptime it sets, when it sets one (memcached's encoding: 0 = never,
  // <= 30 days relative seconds, else absolute unix time, negative = expired)
  bool has_exptime = false;
  int64_t exptime = 0;
  // flush_all delay (seconds), 0 = now
  int64_t flush_delay = 0;
  uint8_t nkeys = 0;
  std::array<std::string_view, kMaxKeys> keys{};
};

// Parses a request datagram's payload (frame header included). Never fails: what it
// cannot understand is Kind::unknown (or a get with an issue).
void parse_request(std::span<const uint8_t> payload, Request& r);

// ---- requests in a TCP byte stream, one command at a time (kvcache's write invalidation)
// A binary request's header, extras and key, as far as a stream scanner keeps them.
inline constexpr size_t kBinMaxHead = kBinHeader + 255 + kMemcachedMaxKey;
// One ASCII command line (ending in "\r" or not; its "\n" taken off) → what it does;
// `has_data`/`data_len`: whether a data block follows it (storage commands, ms) and its
// length, its own "\r\n" not counted. False when memcached will refuse the line in a way
// that leaves the meaning of what follows unknown.
bool parse_ascii_line(std::string_view line, Request& r, bool& has_data, uint64_t& data_len);
// A binary request's header + extras + key (exactly that long, at most kBinMaxHead; its
// value left out) → what it does; its key is a view into `head`, whose body length field
// is rewritten to leave the value out. Anything else is Kind::unknown.
void parse_binary_head(std::span<uint8_t> head, Request& r);

// ---- responses (memcached → client)

struct Value {
  std::string_view key;  // empty for binary GET/GETQ (the key is not in the response)
  std::string_view data;
  uint32_t flags = 0;
  uint64_t cas = 0;
  bool has_cas = false;
};

struct Response {
  Proto proto = Proto::ascii;
  bool ok = false;   // parsed completely
  bool end = false;  // ASCII "END\r\n" seen / a binary response (always final)
  uint8_t nvalues = 0;
  std::array<Value, kMaxKeys> values{};
  // binary
  uint8_t opcode = 0;
  uint16_t status = 0;
  uint32_t opaque = 0;
};

// Parses a response datagram's payload after the frame header as a reply to a get:
// ASCII "VALUE ...\r\n<data>\r\n"* ["END\r\n"], or one binary response. ok=false when
// it is anything else or malformed (it is then passed on and never learned from).
void parse_get_response(std::span<const uint8_t> body, Response& r);

// Sizes of the replies kvcache builds (payload, frame header included).
size_t ascii_value_len(std::string_view key, uint32_t flags, size_t vlen, bool with_cas,
                       uint64_t cas);
// Writes "VALUE <key> <flags> <bytes>[ <cas>]\r\n<data>\r\n" at `out`; returns bytes written.
size_t write_ascii_value(uint8_t* out, std::string_view key, uint32_t flags, std::string_view data,
                         bool with_cas, uint64_t cas);

}  // namespace gaon::kv
