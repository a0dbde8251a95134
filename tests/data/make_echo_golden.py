#!/usr/bin/env python3
"""Writes the echo golden captures, independently of gaon's own code.

  echo_in.pcap        frames arriving from the wire
  echo_out.pcap       what the echo ikernel (attached to udp:10.0.0.2:7) must send to the wire
  echo_host.pcap      what must pass to the host, byte for byte

Frames and checksums are built here with nothing but struct, so the expected output does not
come from the code under test. Run it again only when the fixture should change.
"""
import struct
import sys
from pathlib import Path

CLIENT_MAC = bytes.fromhex("020000000001")
SERVER_MAC = bytes.fromhex("020000000002")


def csum(data: bytes, initial: int = 0) -> int:
    if len(data) % 2:
        data += b"\0"
    s = initial + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ip4(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def ip6(a: str) -> bytes:
    import ipaddress
    return ipaddress.IPv6Address(a).packed


def udp_seg(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes, mode: str) -> bytes:
    length = 8 + len(payload)
    seg = struct.pack("!HHHH", sport, dport, length, 0) + payload
    pseudo = src + dst + (struct.pack("!BBH", 0, 17, length) if len(src) == 4
                          else struct.pack("!IxxxB", length, 17))
    if mode == "full":
        c = csum(pseudo + seg) or 0xFFFF
    elif mode == "zero":
        c = 0
    elif mode == "partial":  # what a local socket leaves for offload: the folded pseudo sum
        c = ~csum(pseudo) & 0xFFFF
    else:
        raise ValueError(mode)
    return seg[:6] + struct.pack("!H", c) + seg[8:]


def eth(dst: bytes, src: bytes, etype: int, body: bytes, vlan=None) -> bytes:
    if vlan is not None:
        return dst + src + struct.pack("!HHH", 0x8100, vlan, etype) + body
    return dst + src + struct.pack("!H", etype) + body


def ipv4(src: str, dst: str, proto: int, l4: bytes, ident=0x1234, ttl=64, frag=0, options=b"") -> bytes:
    ihl = 5 + len(options) // 4
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(l4), ident, frag, ttl, proto, 0,
                      ip4(src), ip4(dst)) + options
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + l4


def ipv6(src: str, dst: str, nh: int, l4: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, len(l4), nh, 64, ip6(src), ip6(dst)) + l4


def udp4_frame(src, dst, sport, dport, payload, mode="full", vlan=None, options=b"",
               smac=CLIENT_MAC, dmac=SERVER_MAC):
    seg = udp_seg(ip4(src), ip4(dst), sport, dport, payload, mode)
    return eth(dmac, smac, 0x0800, ipv4(src, dst, 17, seg, options=options), vlan)


def udp6_frame(src, dst, sport, dport, payload, smac=CLIENT_MAC, dmac=SERVER_MAC):
    seg = udp_seg(ip6(src), ip6(dst), sport, dport, payload, "full")
    return eth(dmac, smac, 0x86DD, ipv6(src, dst, 17, seg))


def tcp4_frame(src, dst, sport, dport, payload):
    seg = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x18, 65535, 0, 0) + payload
    pseudo = ip4(src) + ip4(dst) + struct.pack("!BBH", 0, 6, len(seg))
    seg = seg[:16] + struct.pack("!H", csum(pseudo + seg)) + seg[18:]
    return eth(SERVER_MAC, CLIENT_MAC, 0x0800, ipv4(src, dst, 6, seg))


def write_pcap(path: Path, frames):
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, fr in enumerate(frames):
            f.write(struct.pack("<IIII", 1700000000 + i, 0, len(fr), len(fr)))
            f.write(fr)


def main(out_dir: Path):
    C, S = "10.0.0.1", "10.0.0.2"
    wire_in, wire_out, host_out = [], [], []

    def echoed(req, rep):
        wire_in.append(req)
        wire_out.append(rep)

    def passed(req):
        wire_in.append(req)
        host_out.append(req)

    # Echoed: the reply is the request with MACs, IPs and ports swapped.
    for i, payload in enumerate([b"hello", b"", b"x" * 1000, bytes(range(256)), b"odd"]):
        echoed(udp4_frame(C, S, 40000 + i, 7, payload),
               udp4_frame(S, C, 7, 40000 + i, payload, smac=SERVER_MAC, dmac=CLIENT_MAC))
    echoed(udp4_frame(C, S, 41000, 7, b"no checksum", mode="zero"),
           udp4_frame(S, C, 7, 41000, b"no checksum", mode="zero", smac=SERVER_MAC, dmac=CLIENT_MAC))
    # A checksum left to offload is answered with a full one.
    echoed(udp4_frame(C, S, 41001, 7, b"offloaded", mode="partial"),
           udp4_frame(S, C, 7, 41001, b"offloaded", smac=SERVER_MAC, dmac=CLIENT_MAC))
    echoed(udp4_frame(C, S, 41002, 7, b"tagged", vlan=42),
           udp4_frame(S, C, 7, 41002, b"tagged", vlan=42, smac=SERVER_MAC, dmac=CLIENT_MAC))
    echoed(udp4_frame(C, S, 41003, 7, b"options", options=b"\x94\x04\x00\x00"),
           udp4_frame(S, C, 7, 41003, b"options", options=b"\x94\x04\x00\x00", smac=SERVER_MAC,
                      dmac=CLIENT_MAC))
    # IPv6 is not attached: passes through.
    passed(udp6_frame("fd00::1", "fd00::2", 41004, 7, b"v6"))
    # TCP to port 7: only udp:10.0.0.2:7 is attached, so it is unmatched and passes.
    passed(tcp4_frame(C, S, 41005, 7, b"GET / HTTP/1.0\r\n\r\n"))
    # Other ports: not attached.
    passed(udp4_frame(C, S, 41006, 8, b"not for echo"))
    # Malformed: fail-open to the host, untouched.
    bad_ip = bytearray(udp4_frame(C, S, 41007, 7, b"bad ip checksum"))
    bad_ip[24] ^= 0xFF
    passed(bytes(bad_ip))
    seg = udp_seg(ip4(C), ip4(S), 41008, 7, b"fragment", "full")
    passed(eth(SERVER_MAC, CLIENT_MAC, 0x0800, ipv4(C, S, 17, seg, frag=0x2000)))
    passed(udp4_frame(C, S, 41009, 7, b"truncated")[:30])
    bad_udp = bytearray(udp4_frame(C, S, 41010, 7, b"bad udp checksum"))
    bad_udp[40] ^= 0x5A
    passed(bytes(bad_udp))
    # ARP request.
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, CLIENT_MAC, ip4(C), b"\0" * 6, ip4(S))
    passed(eth(b"\xff" * 6, CLIENT_MAC, 0x0806, arp))

    write_pcap(out_dir / "echo_in.pcap", wire_in)
    write_pcap(out_dir / "echo_out.pcap", wire_out)
    write_pcap(out_dir / "echo_host.pcap", host_out)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
