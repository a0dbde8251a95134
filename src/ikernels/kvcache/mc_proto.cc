#include "mc_proto.h"

#include <cstring>

#include "gaon/net.h"

namespace gaon::kv {

std::string_view to_string(ReqIssue r) {
  switch (r) {
    case ReqIssue::none:
      return "none";
    case ReqIssue::short_datagram:
      return "short_datagram";
    case ReqIssue::multi_datagram:
      return "multi_datagram";
    case ReqIssue::empty:
      return "empty";
    case ReqIssue::no_line_end:
      return "no_line_end";
    case ReqIssue::unusual_form:
      return "unusual_form";
    case ReqIssue::too_many_keys:
      return "too_many_keys";
    case ReqIssue::key_too_long:
      return "key_too_long";
    case ReqIssue::bad_binary:
      return "bad_binary";
    case ReqIssue::several_commands:
      return "several_commands";
    case ReqIssue::count_:
      break;
  }
  return "unknown";
}

bool read_udp_header(std::span<const uint8_t> payload, UdpHeader& h) {
  if (payload.size() < kUdpHeader) return false;
  const uint8_t* p = payload.data();
  h.req_id = net::load16(p);
  h.seq = net::load16(p + 2);
  h.total = net::load16(p + 4);
  h.reserved = net::load16(p + 6);
  return true;
}

void write_udp_header(uint8_t* p, uint16_t req_id) {
  net::store16(p, req_id);
  net::store16(p + 2, 0);
  net::store16(p + 4, 1);
  net::store16(p + 6, 0);
}

namespace {

using sv = std::string_view;

bool parse_u64(sv t, uint64_t& v) {
  if (t.empty() || t.size() > 20) return false;
  uint64_t x = 0;
  for (char c : t) {
    if (c < '0' || c > '9') return false;
    const uint64_t d = uint64_t(c - '0');
    if (x > (UINT64_MAX - d) / 10) return false;
    x = x * 10 + d;
  }
  v = x;
  return true;
}

bool parse_i64(sv t, int64_t& v) {
  bool neg = false;
  if (!t.empty() && t[0] == '-') {
    neg = true;
    t.remove_prefix(1);
  }
  uint64_t u;
  if (!parse_u64(t, u) || u > uint64_t(INT64_MAX)) return false;
  v = neg ? -int64_t(u) : int64_t(u);
  return true;
}

// Splits an ASCII command line into space-separated tokens. `unusual` is set when the
// line has empty tokens (repeated, leading or trailing spaces) or other whitespace.
struct Tokens {
  static constexpr size_t kMax = kMaxKeys + 8;
  std::array<sv, kMax> t{};
  size_t n = 0;
  bool overflow = false;
  bool unusual = false;
};

void tokenize(sv line, Tokens& tk) {
  size_t i = 0;
  while (i <= line.size()) {
    size_t j = line.find(' ', i);
    if (j == sv::npos) j = line.size();
    const sv tok = line.substr(i, j - i);
    if (tok.empty()) {
      tk.unusual = true;
    } else {
      if (tok.find_first_of("\t\r\n\v\f") != sv::npos) tk.unusual = true;
      if (tk.n < Tokens::kMax)
        tk.t[tk.n++] = tok;
      else
        tk.overflow = true;
    }
    i = j + 1;
  }
}

// One command's effect, before combining the commands of a datagram.
struct Cmd {
  Kind kind = Kind::unknown;
  ReqIssue issue = ReqIssue::none;
  bool noreply = false;
  bool meta = false;
  bool cas = false;
  bool has_exptime = false;
  int64_t exptime = 0;
  int64_t flush_delay = 0;
  uint8_t opcode = 0;
  uint32_t opaque = 0;
  size_t nkeys = 0;
  std::array<sv, kMaxKeys> keys{};
  bool add_key(sv k) {
    if (nkeys >= kMaxKeys) return false;
    keys[nkeys++] = k;
    return true;
  }
};

// Classifies one ASCII command line (without its line end). `data`: whether a data block
// follows it (storage commands and ms) and its length (its own "\r\n" not counted). False
// when memcached will refuse the line in a way that leaves what follows unknown.
bool ascii_head(sv line, bool unusual, Cmd& c, bool& has_data, uint64_t& data_len) {
  has_data = false;
  data_len = 0;
  Tokens tk;
  tokenize(line, tk);
  unusual |= tk.unusual;
  if (tk.n == 0) {
    c.kind = Kind::read;  // an empty line: memcached answers ERROR
    c.issue = ReqIssue::unusual_form;
    return true;
  }
  const sv cmd = tk.t[0];
  auto noreply_last = [&] { return tk.n > 1 && tk.t[tk.n - 1] == "noreply"; };
  auto key_ok = [&](sv k) { return k.size() <= kMemcachedMaxKey; };

  if (cmd == "get" || cmd == "gets") {
    c.kind = Kind::get;
    c.cas = cmd == "gets";
    if (tk.n < 2) {
      c.kind = Kind::read;  // "ERROR"
      c.issue = ReqIssue::unusual_form;
    } else if (tk.overflow || tk.n - 1 > kMaxKeys) {
      c.issue = ReqIssue::too_many_keys;
    } else {
      for (size_t i = 1; i < tk.n; ++i) {
        if (!key_ok(tk.t[i])) c.issue = ReqIssue::key_too_long;
        c.add_key(tk.t[i]);
      }
    }
    if (unusual && c.issue == ReqIssue::none) c.issue = ReqIssue::unusual_form;
    return true;
  }
  if (cmd == "gat" || cmd == "gats") {  // gat <exptime> <key>*: changes the keys' TTL
    c.kind = Kind::write;
    if (tk.n < 3 || tk.overflow || tk.n - 2 > kMaxKeys || !parse_i64(tk.t[1], c.exptime)) {
      c.kind = Kind::unknown;
      return true;
    }
    c.has_exptime = true;
    for (size_t i = 2; i < tk.n; ++i) c.add_key(tk.t[i]);
    return true;
  }
  const bool storage = cmd == "set" || cmd == "add" || cmd == "replace" || cmd == "append" ||
                       cmd == "prepend" || cmd == "cas";
  if (storage) {
    // <cmd> <key> <flags> <exptime> <bytes> [<cas>] [noreply]\r\n<data>\r\n
    c.kind = Kind::write;
    const size_t need = cmd == "cas" ? 6 : 5;
    uint64_t bytes = 0;
    if (tk.n < 2) {
      c.kind = Kind::read;  // memcached: ERROR, nothing stored
      return true;
    }
    c.add_key(tk.t[1]);
    if (tk.n < need || !parse_u64(tk.t[4], bytes)) {
      // memcached refuses it (CLIENT_ERROR) and may then take the data line for a
      // command of its own: trust nothing that follows.
      c.kind = Kind::unknown;
      return false;
    }
    if (cmd != "append" && cmd != "prepend") {
      c.has_exptime = parse_i64(tk.t[3], c.exptime);
      if (!c.has_exptime) {
        c.kind = Kind::unknown;
        return false;
      }
    }
    c.noreply = noreply_last();
    has_data = true;
    data_len = bytes;
    return true;
  }
  if (cmd == "delete" || cmd == "incr" || cmd == "decr" || cmd == "touch") {
    c.kind = Kind::write;
    if (tk.n < 2) {
      c.kind = Kind::read;
      return true;
    }
    c.add_key(tk.t[1]);
    c.noreply = noreply_last();
    if (cmd == "touch") {
      if (tk.n < 3 || !parse_i64(tk.t[2], c.exptime)) return true;  // refused: no change
      c.has_exptime = true;
    }
    return true;
  }
  if (cmd == "flush_all") {
    c.kind = Kind::flush;
    c.noreply = noreply_last();
    if (tk.n >= 2 && tk.t[1] != "noreply" && !parse_i64(tk.t[1], c.flush_delay)) c.flush_delay = 0;
    return true;
  }
  if (cmd == "mg" || cmd == "ms" || cmd == "md" || cmd == "ma") {
    // Meta commands: the key is the second token. A base64 key ("b" flag) is not the key
    // itself, so such a request is treated as unknown.
    c.kind = Kind::write;
    c.meta = true;
    if (tk.n < 2 || tk.overflow) {
      c.kind = Kind::unknown;
      return false;
    }
    size_t first_flag = 2;
    uint64_t datalen = 0;
    if (cmd == "ms") {
      if (tk.n < 3 || !parse_u64(tk.t[2], datalen)) {
        c.kind = Kind::unknown;
        return false;
      }
      first_flag = 3;
    }
    for (size_t i = first_flag; i < tk.n; ++i) {
      const sv f = tk.t[i];
      if (f == "b") {
        c.kind = Kind::unknown;
        return false;
      }
      if (f == "q") c.noreply = true;
      if (f.size() > 1 && f[0] == 'T') {
        int64_t e;
        if (parse_i64(f.substr(1), e)) {
          c.has_exptime = true;
          c.exptime = e;
        }
      }
    }
    c.add_key(tk.t[1]);
    has_data = cmd == "ms";
    data_len = datalen;
    return true;
  }
  c.meta = cmd == "mn" || cmd == "me";
  if (cmd == "mn" || cmd == "me" || cmd == "stats" || cmd == "version" || cmd == "verbosity" ||
      cmd == "quit") {
    c.kind = Kind::read;
    return true;
  }
  c.kind = Kind::unknown;
  return true;
}

// Parses one ASCII command at the start of `in`; returns the bytes it spans (0: the rest
// of the datagram is not a complete command).
size_t ascii_command(sv in, Cmd& c) {
  const size_t nl = in.find('\n');
  if (nl == sv::npos) {
    c.issue = ReqIssue::no_line_end;
    c.kind = Kind::unknown;
    return 0;
  }
  sv line = in.substr(0, nl);
  bool unusual = false;
  if (!line.empty() && line.back() == '\r')
    line.remove_suffix(1);
  else
    unusual = true;  // memcached accepts a bare "\n"
  size_t used = nl + 1;
  bool has_data = false;
  uint64_t data = 0;
  if (!ascii_head(line, unusual, c, has_data, data)) return 0;
  if (has_data) {
    if (data > in.size() - used || in.size() - used - data < 2) {
      c.kind = Kind::unknown;  // the data block is cut short
      return 0;
    }
    used += data + 2;
  }
  return used;
}

bool is_get_op(uint8_t op) {
  return op == bin::GET || op == bin::GETQ || op == bin::GETK || op == bin::GETKQ;
}

// Parses one binary request at the start of `in`; returns the bytes it spans (0: malformed).
size_t binary_command(std::span<const uint8_t> in, Cmd& c) {
  if (in.size() < kBinHeader || in[0] != bin::kReq) {
    c.kind = Kind::unknown;
    c.issue = ReqIssue::bad_binary;
    return 0;
  }
  const uint8_t* h = in.data();
  const uint8_t op = h[1];
  const uint16_t keylen = net::load16(h + 2);
  const uint8_t extlen = h[4];
  const uint32_t body = net::load32(h + 8);
  if (body < uint32_t{extlen} + keylen || body > in.size() - kBinHeader) {
    c.kind = Kind::unknown;
    c.issue = ReqIssue::bad_binary;
    return 0;
  }
  const uint8_t* ext = h + kBinHeader;
  const sv key(reinterpret_cast<const char*>(ext + extlen), keylen);
  c.opcode = op;
  c.opaque = net::load32(h + 12);
  auto exptime_at = [&](size_t off) {
    if (extlen >= off + 4) {
      c.has_exptime = true;
      c.exptime = int32_t(net::load32(ext + off));
    }
  };
  switch (op) {
    case bin::GET:
    case bin::GETQ:
    case bin::GETK:
    case bin::GETKQ:
      c.kind = Kind::get;
      if (keylen == 0 || extlen != 0 || body != keylen) {
        c.kind = Kind::read;  // memcached refuses it
        c.issue = ReqIssue::bad_binary;
      } else if (keylen > kMemcachedMaxKey) {
        c.issue = ReqIssue::key_too_long;
      }
      c.add_key(key);
      break;
    case bin::SET:
    case bin::ADD:
    case bin::REPLACE:
    case bin::SETQ:
    case bin::ADDQ:
    case bin::REPLACEQ:
      c.kind = Kind::write;
      exptime_at(4);  // extras: flags, exptime
      c.add_key(key);
      break;
    case bin::INCR:
    case bin::DECR:
    case bin::INCRQ:
    case bin::DECRQ:
      c.kind = Kind::write;
      exptime_at(16);  // extras: delta, initial, exptime
      c.add_key(key);
      break;
    case bin::TOUCH:
    case bin::GAT:
    case bin::GATQ:
    case bin::GATK:
    case bin::GATKQ:
      c.kind = Kind::write;
      exptime_at(0);
      c.add_key(key);
      break;
    case bin::DELETE:
    case bin::DELETEQ:
    case bin::APPEND:
    case bin::PREPEND:
    case bin::APPENDQ:
    case bin::PREPENDQ:
      c.kind = Kind::write;
      c.add_key(key);
      break;
    case bin::FLUSH:
    case bin::FLUSHQ:
      c.kind = Kind::flush;
      if (extlen >= 4) c.flush_delay = int32_t(net::load32(ext));
      break;
    case bin::NOOP:
    case bin::VERSION:
    case bin::STAT:
    case bin::QUIT:
    case bin::QUITQ:
    case bin::VERBOSITY:
      c.kind = Kind::read;
      break;
    default:
      c.kind = Kind::unknown;
      break;
  }
  const bool quiet = op == bin::SETQ || op == bin::ADDQ || op == bin::REPLACEQ ||
                     op == bin::DELETEQ || op == bin::INCRQ || op == bin::DECRQ ||
                     op == bin::APPENDQ || op == bin::PREPENDQ || op == bin::FLUSHQ ||
                     op == bin::GATQ || op == bin::GATKQ || op == bin::QUITQ;
  c.noreply = quiet;
  return kBinHeader + body;
}

// The fast path for the most common request, "get <key>\r\n" or "gets <key>\r\n" and
// nothing else; anything else falls through to the general parser.
bool ascii_single_get(std::span<const uint8_t> body, Request& r) {
  const char* b = reinterpret_cast<const char*>(body.data());
  const size_t n = body.size();
  size_t k;
  if (n > 6 && std::memcmp(b, "get ", 4) == 0)
    k = 4;
  else if (n > 7 && std::memcmp(b, "gets ", 5) == 0)
    k = 5;
  else
    return false;
  if (b[n - 2] != '\r' || b[n - 1] != '\n') return false;
  const size_t klen = n - 2 - k;
  if (klen == 0 || klen > kMemcachedMaxKey) return false;
  for (size_t i = k; i < n - 2; ++i) {
    const unsigned char c = static_cast<unsigned char>(b[i]);
    if (c <= ' ' || c == 0x7f) return false;  // spaces, control characters: general path
  }
  r.kind = Kind::get;
  r.cas = k == 5;
  r.nkeys = 1;
  r.keys[0] = sv(b + k, klen);
  return true;
}

void to_request(const Cmd& c, Request& r) {
  r.kind = c.kind;
  r.issue = c.issue;
  r.noreply = c.noreply;
  r.meta = c.meta;
  r.cas = c.cas;
  r.opcode = c.opcode;
  r.opaque = c.opaque;
  r.has_exptime = c.has_exptime;
  r.exptime = c.exptime;
  r.flush_delay = c.flush_delay;
  r.nkeys = static_cast<uint8_t>(c.nkeys);
  r.keys = c.keys;
}

}  // namespace

bool parse_ascii_line(std::string_view line, Request& r, bool& has_data, uint64_t& data_len) {
  r = Request{};
  Cmd c;
  bool unusual = false;
  if (!line.empty() && line.back() == '\r')
    line.remove_suffix(1);
  else
    unusual = true;
  const bool framed = ascii_head(line, unusual, c, has_data, data_len);
  to_request(c, r);
  return framed;
}

void parse_binary_head(std::span<uint8_t> head, Request& r) {
  r = Request{};
  r.proto = Proto::binary;
  if (head.size() < kBinHeader || head.size() > kBinMaxHead ||
      head.size() != kBinHeader + head[4] + net::load16(head.data() + 2)) {
    r.kind = Kind::unknown;
    r.issue = ReqIssue::bad_binary;
    return;
  }
  net::store32(head.data() + 8, uint32_t(head.size() - kBinHeader));  // the value is not here
  Cmd c;
  binary_command(head, c);
  to_request(c, r);  // its key is a view into `head`
}

void parse_request(std::span<const uint8_t> payload, Request& r) {
  r = Request{};
  UdpHeader h;
  if (!read_udp_header(payload, h)) {  // memcached drops it
    r.kind = Kind::read;
    r.issue = ReqIssue::short_datagram;
    return;
  }
  if (h.total != 1 || h.seq != 0) {  // memcached refuses multi-datagram requests
    r.kind = Kind::read;
    r.issue = ReqIssue::multi_datagram;
    return;
  }
  std::span<const uint8_t> body = payload.subspan(kUdpHeader);
  if (body.empty()) {
    r.kind = Kind::read;
    r.issue = ReqIssue::empty;
    return;
  }
  r.proto = body[0] == bin::kReq ? Proto::binary : Proto::ascii;
  if (r.proto == Proto::ascii && ascii_single_get(body, r)) return;  // the common case
  size_t ncmd = 0;
  while (!body.empty()) {
    Cmd c;
    const size_t used =
        r.proto == Proto::binary
            ? binary_command(body, c)
            : ascii_command(sv(reinterpret_cast<const char*>(body.data()), body.size()), c);
    ++ncmd;
    if (ncmd == 1) {
      to_request(c, r);
    } else {
      // Several commands in one datagram: never served; their writes are combined. A
      // write that sets an exptime among others is treated as unknown (the cache keeps
      // one exptime per request).
      auto severity = [](Kind k) {
        return k == Kind::unknown ? 4 : k == Kind::flush ? 3 : k == Kind::write ? 2 : 1;
      };
      Kind k = severity(c.kind) > severity(r.kind) ? c.kind : r.kind;
      if (k == Kind::get) k = Kind::read;
      if ((c.kind == Kind::write && c.has_exptime) || (r.kind == Kind::write && r.has_exptime))
        k = Kind::unknown;
      if (r.nkeys + c.nkeys > kMaxKeys) k = Kind::unknown;
      for (size_t i = 0; i < c.nkeys && r.nkeys < kMaxKeys; ++i) r.keys[r.nkeys++] = c.keys[i];
      r.kind = k;
      r.noreply = r.noreply && c.noreply;
      r.issue = ReqIssue::several_commands;
    }
    if (used == 0) {  // the rest cannot be trusted
      if (r.kind != Kind::get && r.kind != Kind::read) break;
      if (c.kind == Kind::unknown) r.kind = Kind::unknown;
      break;
    }
    body = body.subspan(used);
  }
  if (ncmd > 1 && r.kind == Kind::get) r.kind = Kind::read;
}

// ---------------------------------------------------------------- responses

void parse_get_response(std::span<const uint8_t> body, Response& r) {
  r = Response{};
  if (body.empty()) return;
  if (body[0] == bin::kRes) {
    r.proto = Proto::binary;
    while (!body.empty()) {
      if (body.size() < kBinHeader || body[0] != bin::kRes) return;
      const uint8_t* h = body.data();
      const uint8_t op = h[1];
      const uint16_t keylen = net::load16(h + 2);
      const uint8_t extlen = h[4];
      const uint16_t status = net::load16(h + 6);
      const uint32_t blen = net::load32(h + 8);
      if (blen < uint32_t{extlen} + keylen || blen > body.size() - kBinHeader) return;
      r.opcode = op;
      r.status = status;
      r.opaque = net::load32(h + 12);
      if (is_get_op(op) && status == 0) {
        if (extlen != 4 || r.nvalues >= kMaxKeys) return;
        Value& v = r.values[r.nvalues++];
        const uint8_t* ext = h + kBinHeader;
        v.flags = net::load32(ext);
        v.key = sv(reinterpret_cast<const char*>(ext + 4), keylen);
        v.data = sv(reinterpret_cast<const char*>(ext + 4 + keylen), blen - 4 - keylen);
        v.cas = uint64_t{net::load32(h + 16)} << 32 | net::load32(h + 20);
        v.has_cas = true;
      } else if (!(op == bin::NOOP || (is_get_op(op) && status != 0))) {
        return;  // not a reply to a get
      }
      body = body.subspan(kBinHeader + blen);
    }
    r.end = true;
    r.ok = true;
    return;
  }
  sv in(reinterpret_cast<const char*>(body.data()), body.size());
  while (!in.empty()) {
    if (in == "END\r\n") {
      r.end = true;
      r.ok = true;
      return;
    }
    if (in.substr(0, 6) != "VALUE ") return;
    const size_t eol = in.find("\r\n");
    if (eol == sv::npos) return;
    Tokens tk;
    tokenize(in.substr(0, eol), tk);
    if (tk.unusual || tk.n < 4 || tk.n > 5) return;
    uint64_t flags, bytes, cas = 0;
    if (!parse_u64(tk.t[2], flags) || flags > UINT32_MAX || !parse_u64(tk.t[3], bytes)) return;
    if (tk.n == 5 && !parse_u64(tk.t[4], cas)) return;
    const size_t data_off = eol + 2;
    if (bytes > in.size() - data_off || in.size() - data_off - bytes < 2) return;
    if (in.substr(data_off + bytes, 2) != "\r\n") return;
    if (r.nvalues >= kMaxKeys) return;
    Value& v = r.values[r.nvalues++];
    v.key = tk.t[1];
    v.flags = uint32_t(flags);
    v.data = in.substr(data_off, bytes);
    v.cas = cas;
    v.has_cas = tk.n == 5;
    in.remove_prefix(data_off + bytes + 2);
  }
  r.ok = true;  // values without END: one datagram of a multi-key reply
}

// ---------------------------------------------------------------- replies

static size_t digits(uint64_t v) {
  size_t n = 1;
  while (v >= 10) {
    v /= 10;
    ++n;
  }
  return n;
}

static uint8_t* put_u64(uint8_t* out, uint64_t v) {
  const size_t n = digits(v);
  for (size_t i = n; i-- > 0;) {
    out[i] = uint8_t('0' + v % 10);
    v /= 10;
  }
  return out + n;
}

size_t ascii_value_len(std::string_view key, uint32_t flags, size_t vlen, bool with_cas,
                       uint64_t cas) {
  return 6 + key.size() + 1 + digits(flags) + 1 + digits(vlen) + (with_cas ? 1 + digits(cas) : 0) +
         2 + vlen + 2;
}

size_t write_ascii_value(uint8_t* out, std::string_view key, uint32_t flags, std::string_view data,
                         bool with_cas, uint64_t cas) {
  // The key may be in this very buffer (the request being turned into its reply): move
  // it into place before anything else is written.
  std::memmove(out + 6, key.data(), key.size());
  std::memcpy(out, "VALUE ", 6);
  uint8_t* p = out + 6 + key.size();
  *p++ = ' ';
  p = put_u64(p, flags);
  *p++ = ' ';
  p = put_u64(p, data.size());
  if (with_cas) {
    *p++ = ' ';
    p = put_u64(p, cas);
  }
  *p++ = '\r';
  *p++ = '\n';
  std::memcpy(p, data.data(), data.size());
  p += data.size();
  *p++ = '\r';
  *p++ = '\n';
  return size_t(p - out);
}

}  // namespace gaon::kv
