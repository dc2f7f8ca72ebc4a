import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A blocking SMTP client over a plain TCP socket, for tests that need exact control of the
/// bytes (pipelining, BDAT, hostile input). Every read has a timeout, so a test cannot hang.
/// Use it inside `onThread`.
public final class RawSMTPClient {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    private let fd: Int32
    private var pending: [UInt8] = []

    public init(port: Int, timeoutSeconds: Int = 10) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: errno \(errno)") }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            close(fd)
            throw Failure(description: "connect to 127.0.0.1:\(port): errno \(errno)")
        }
    }

    deinit { close(fd) }

    public func send(_ text: String) throws { try send(Array(text.utf8)) }

    public func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard sent > 0 else { throw Failure(description: "send: errno \(errno)") }
            offset += sent
        }
    }

    /// Reads one reply (all its lines); returns its code and the joined lines.
    public func readReply() throws -> (code: Int, text: String) {
        var lines: [String] = []
        while true {
            let line = try readLine()
            lines.append(line)
            guard line.count >= 4 else { throw Failure(description: "short reply line: \(line)") }
            if line[line.index(line.startIndex, offsetBy: 3)] == " " {
                return (Int(line.prefix(3)) ?? 0, lines.joined(separator: "\n"))
            }
        }
    }

    /// Sends a command and returns the code of its reply.
    @discardableResult
    public func command(_ line: String) throws -> (code: Int, text: String) {
        try send(line + "\r\n")
        return try readReply()
    }

    public func readLine() throws -> String {
        while true {
            if let lf = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = pending[..<lf]
                pending.removeSubrange(...lf)
                return String(decoding: line.last == UInt8(ascii: "\r") ? line.dropLast() : line, as: UTF8.self)
            }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let count = recv(fd, &chunk, chunk.count, 0)
            guard count > 0 else { throw Failure(description: count == 0 ? "connection closed" : "recv: errno \(errno)") }
            pending += chunk[..<count]
        }
    }

    /// True when a reply (or the end of the connection) is waiting to be read.
    public func isReadable(timeoutMilliseconds: Int32 = 0) -> Bool {
        guard pending.isEmpty else { return true }
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&entry, 1, timeoutMilliseconds) > 0
    }

    /// True when the server has closed the connection: a read finds end-of-file, or a reset
    /// (a byte the client sent in the instant between the server's reply and its close makes
    /// the kernel answer with a reset, which is still the server's close).
    public func isClosedByServer() -> Bool {
        var byte: UInt8 = 0
        let count = recv(fd, &byte, 1, 0)
        return count == 0 || (count < 0 && errno == ECONNRESET)
    }
}
