import NIOCore
import Testing

@testable import SocketIO

#if canImport(Glibc)
    import Glibc
#endif

@Suite("AddressText: IPs as inet_ntop writes them, with ports")
struct AddressTextTests {
    static let samples = ["0.0.0.0", "127.0.0.1", "255.255.255.255", "10.1.20.200", "9.99.100.7", "192.168.0.10"]

    @Test("IPv4 dotted quads written here equal inet_ntop's, every octet width")
    func ipv4() throws {
        for text in Self.samples {
            let address = try SocketAddress(ipAddress: text, port: 0)
            #expect(AddressText.ip(address) == text)
            #expect(AddressText.ip(address) == address.ipAddress)
        }
        #expect(AddressText.ip(try SocketAddress(ipAddress: "::1", port: 0)) == "::1")
    }

    @Test("with ports, IPv6 bracketed")
    func described() throws {
        #expect(AddressText.describe(try SocketAddress(ipAddress: "127.0.0.1", port: 54321)) == "127.0.0.1:54321")
        #expect(AddressText.describe(try SocketAddress(ipAddress: "10.0.0.1", port: 0)) == "10.0.0.1:0")
        #expect(AddressText.describe(try SocketAddress(ipAddress: "::1", port: 25)) == "[::1]:25")
    }

    @Test("an accepted IPv4 peer's address is what NIO's SocketAddress(sockaddr_in) makes, host text included")
    func accepted() throws {
        for text in Self.samples {
            let nio = try SocketAddress(ipAddress: text, port: 4242)
            var storage = sockaddr_storage()
            nio.withSockAddr { pointer, size in
                withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: UnsafeRawBufferPointer(start: pointer, count: size)) }
            }
            let made = try #require(LoopListener.address(storage))
            let expected = nio.withSockAddr { pointer, _ in
                pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { SocketAddress($0.pointee) }
            }
            #expect(made == expected)
            #expect(made.description == expected.description)
        }
    }
}
