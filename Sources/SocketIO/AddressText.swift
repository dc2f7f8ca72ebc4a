import NIOCore

/// An address's IP as `inet_ntop` writes it, IPv4 written here: a connection per message
/// formatted its peer's address two or three times (NIO's `SocketAddress(sockaddr_in)` keeps
/// `inet_ntop`'s text as its host, and the sink describes the peer again), ~5% of the sink's
/// user time at 1 KiB messages (`perf record`). A dotted quad fits in a Swift string with no
/// allocation.
public enum AddressText {
    /// `a.b.c.d` of an IPv4 address given as its four bytes in network order.
    public static func dottedQuad(_ bytes: UnsafeRawBufferPointer) -> String {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 15) { buffer in
            var count = 0
            for (index, octet) in bytes.prefix(4).enumerated() {
                if index > 0 {
                    buffer[count] = UInt8(ascii: ".")
                    count += 1
                }
                if octet >= 100 {
                    buffer[count] = UInt8(ascii: "0") + octet / 100
                    count += 1
                }
                if octet >= 10 {
                    buffer[count] = UInt8(ascii: "0") + octet / 10 % 10
                    count += 1
                }
                buffer[count] = UInt8(ascii: "0") + octet % 10
                count += 1
            }
            return String(decoding: UnsafeBufferPointer(rebasing: buffer[..<count]), as: UTF8.self)
        }
    }

    /// The IP of `address` as `inet_ntop` writes it; nil for an address without one.
    public static func ip(_ address: SocketAddress) -> String? {
        guard case .v4 = address else { return address.ipAddress }
        // `sockaddr_in`: family (2 bytes), port (2), then the address in network byte order.
        return address.withSockAddr { pointer, _ in
            dottedQuad(UnsafeRawBufferPointer(start: UnsafeRawPointer(pointer) + 4, count: 4))
        }
    }

    /// `ip:port`, `[ip]:port` for IPv6; the address's own description when it has no IP.
    public static func describe(_ address: SocketAddress, ip known: String? = nil) -> String {
        guard let ip = known ?? Self.ip(address), let port = address.port else { return "\(address)" }
        if ip.utf8.contains(UInt8(ascii: ":")) { return "[\(ip)]:\(port)" }
        var text = ip
        text.append(":")
        text.append(String(port))
        return text
    }
}
