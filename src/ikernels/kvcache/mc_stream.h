// StreamScanner: finds memcached commands in one client→memcached TCP byte stream fed in
// pieces (segments, in order), however the commands are split: ASCII command lines (data
// blocks of storage commands skipped, never read as commands) and binary requests (header,
// extras and key kept; the value skipped). For each command it calls `on(const Request&)`
// once memcached has all it needs to carry the command out — its line or head, and for
// one with a data block (a value) the block's last byte: a data block that comes long
// after its line (a segment lost and resent) delays the write as long — before the segment
// that completes it goes on to memcached. It allocates nothing: a line is kept in a fixed buffer,
// and a line longer than memcached accepts (or a request it cannot frame) loses the stream. Once
// lost it stays lost (feed returns false): the caller must not trust it again.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

#include "gaon/net.h"
#include "kvcache/mc_proto.h"

namespace gaon::kv {

class StreamScanner {
 public:
  static constexpr size_t kMaxLine = 2048;  // memcached's own limit for a command line

  // Feeds the next in-order bytes; false when the stream is (or already was) lost. `on`
  // sees every command, of whatever kind (an unframeable one as Kind::unknown, just
  // before the scanner gives up).
  template <class On>
  bool feed(std::span<const uint8_t> in, On&& on) {
    while (!in.empty() && mode_ != Mode::lost) {
      switch (mode_) {
        case Mode::start:
          have_ = 0;
          if (in[0] == bin::kReq) {
            mode_ = Mode::bin_head;
            need_ = kBinHeader;
          } else {
            mode_ = Mode::line;
          }
          break;
        case Mode::line: {
          const uint8_t* nl = static_cast<const uint8_t*>(std::memchr(in.data(), '\n', in.size()));
          const size_t take = nl ? size_t(nl - in.data()) + 1 : in.size();
          if (have_ + take > kMaxLine) {
            lose(on);
            break;
          }
          std::memcpy(buf_ + have_, in.data(), take);
          have_ += uint32_t(take);
          in = in.subspan(take);
          if (nl == nullptr) break;
          Request r;
          bool has_data = false;
          uint64_t data_len = 0;
          const bool framed = parse_line(r, has_data, data_len);
          ++commands_;
          if (framed && has_data) {  // told at the block's end (the line is kept in buf_)
            skip_ = data_len + 2;
            mode_ = Mode::skip;
            held_ = Held::line;
            break;
          }
          on(static_cast<const Request&>(r));
          mode_ = framed ? Mode::start : Mode::lost;
          break;
        }
        case Mode::bin_head: {
          const size_t take = std::min<size_t>(need_ - have_, in.size());
          std::memcpy(buf_ + have_, in.data(), take);
          have_ += uint32_t(take);
          in = in.subspan(take);
          if (have_ < need_) break;
          if (need_ == kBinHeader) {  // the header is complete: how much more to keep
            const uint32_t extlen = buf_[4];
            const uint32_t keylen = net::load16(buf_ + 2);
            const uint32_t body = net::load32(buf_ + 8);
            if (body < extlen + keylen || kBinHeader + extlen + keylen > kBinMaxHead) {
              lose(on);
              break;
            }
            need_ = uint32_t(kBinHeader) + extlen + keylen;
            value_ = body - extlen - keylen;
            if (have_ < need_) break;
          }
          ++commands_;
          skip_ = value_;
          if (skip_) {  // a value: told at its end (the head is kept in buf_)
            mode_ = Mode::skip;
            held_ = Held::head;
            break;
          }
          Request r;
          parse_binary_head({buf_, need_}, r);
          on(static_cast<const Request&>(r));
          mode_ = Mode::start;
          break;
        }
        case Mode::skip: {
          const size_t n = size_t(std::min<uint64_t>(skip_, in.size()));
          skip_ -= n;
          in = in.subspan(n);
          if (skip_ != 0) break;
          mode_ = Mode::start;
          Request r;
          bool has_data = false;
          uint64_t data_len = 0;
          if (held_ == Held::line)
            (void)parse_line(r, has_data, data_len);
          else if (held_ == Held::head)
            parse_binary_head({buf_, need_}, r);
          if (held_ != Held::none) on(static_cast<const Request&>(r));
          held_ = Held::none;
          break;
        }
        case Mode::lost:
          break;
      }
    }
    return mode_ != Mode::lost;
  }

  bool lost() const { return mode_ == Mode::lost; }
  uint64_t commands() const { return commands_; }
  void reset() { *this = StreamScanner(); }

 private:
  enum class Mode : uint8_t { start, line, bin_head, skip, lost };
  // The command whose data block is being skipped, told at the block's end.
  enum class Held : uint8_t { none, line, head };
  bool parse_line(Request& r, bool& has_data, uint64_t& data_len) const {
    return parse_ascii_line(std::string_view(reinterpret_cast<const char*>(buf_), have_ - 1), r,
                            has_data, data_len);
  }
  template <class On>
  void lose(On&& on) {
    Request r;
    r.kind = Kind::unknown;
    on(static_cast<const Request&>(r));
    mode_ = Mode::lost;
  }
  Mode mode_ = Mode::start;
  Held held_ = Held::none;
  uint32_t have_ = 0, need_ = 0, value_ = 0;
  uint64_t skip_ = 0;
  uint64_t commands_ = 0;
  uint8_t buf_[kMaxLine > kBinMaxHead ? kMaxLine : kBinMaxHead];
};

// ReplyScanner: counts memcached's complete ASCII replies in a memcached→client TCP byte
// stream fed in order: "VALUE ..." lines (their data skipped) and "STAT ..." lines belong
// to a reply that "END" completes; every other line (STORED, DELETED, NOT_FOUND, a number,
// ERROR, ...) is a whole reply. Calls `on()` once per complete reply. Lines longer than
// it keeps, or a VALUE line it cannot read, lose the stream for good (feed returns false).
class ReplyScanner {
 public:
  static constexpr size_t kMaxLine = 320;  // "VALUE <250-byte key> <flags> <bytes> <cas>"

  template <class On>
  bool feed(std::span<const uint8_t> in, On&& on) {
    while (!in.empty() && !lost_) {
      if (skip_ > 0) {
        const size_t n = size_t(std::min<uint64_t>(skip_, in.size()));
        skip_ -= n;
        in = in.subspan(n);
        continue;
      }
      const uint8_t* nl = static_cast<const uint8_t*>(std::memchr(in.data(), '\n', in.size()));
      const size_t take = nl ? size_t(nl - in.data()) + 1 : in.size();
      if (have_ + take > kMaxLine) {
        lost_ = true;
        break;
      }
      std::memcpy(buf_ + have_, in.data(), take);
      have_ += uint32_t(take);
      in = in.subspan(take);
      if (nl == nullptr) break;
      const std::string_view line(reinterpret_cast<const char*>(buf_), have_);
      have_ = 0;
      if (line.starts_with("VALUE ")) {
        // VALUE <key> <flags> <bytes> [<cas>]: the data block follows.
        size_t pos = 6, tok = 0;
        uint64_t bytes = 0;
        bool ok = false;
        while (pos < line.size() && tok < 4) {
          const size_t end = line.find_first_of(" \r\n", pos);
          if (end == std::string_view::npos || end == pos) break;
          if (++tok == 3) {
            ok = true;
            for (size_t i = pos; i < end; ++i) {
              if (line[i] < '0' || line[i] > '9' || bytes > (uint64_t{1} << 40)) ok = false;
              bytes = bytes * 10 + uint64_t(line[i] - '0');
            }
            break;
          }
          pos = end + 1;
        }
        if (!ok) {
          lost_ = true;
          break;
        }
        skip_ = bytes + 2;
        continue;
      }
      if (line.starts_with("STAT ")) continue;
      ++replies_;
      on();
    }
    return !lost_;
  }
  bool lost() const { return lost_; }
  uint64_t replies() const { return replies_; }
  void reset() { *this = ReplyScanner(); }

 private:
  bool lost_ = false;
  uint32_t have_ = 0;
  uint64_t skip_ = 0;
  uint64_t replies_ = 0;
  uint8_t buf_[kMaxLine];
};

}  // namespace gaon::kv
