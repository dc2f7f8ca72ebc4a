import NIOCore
import NIOEmbedded
import Testing

@testable import SinkServer

@Suite("A connection's peer: described once, the local address once per listener")
struct PeerDescriptionTests {
    @Test("remote as ip:port and its IP; the local description as given")
    func peer() throws {
        let peer = Peer(sessionID: "s1", remote: try SocketAddress(ipAddress: "127.0.0.2", port: 40000), local: "127.0.0.1:1025")
        #expect(peer.remote == "127.0.0.2:40000")
        #expect(peer.remoteIP == "127.0.0.2")
        #expect(peer.local == "127.0.0.1:1025")
        let six = Peer(sessionID: "s2", remote: try SocketAddress(ipAddress: "::1", port: 40001), local: "[::1]:1025")
        #expect(six.remote == "[::1]:40001")
        #expect(six.remoteIP == "::1")
    }

    @Test("a loop describes its listener's local address once, and a new one when it changes")
    func localCache() throws {
        let handoff = LoopHandoff(loop: EmbeddedEventLoop())
        let local = try SocketAddress(ipAddress: "127.0.0.1", port: 1025)
        #expect(handoff.describeLocal(local) == "127.0.0.1:1025")
        #expect(handoff.describeLocal(local) == "127.0.0.1:1025")
        #expect(handoff.describeLocal(try SocketAddress(ipAddress: "::1", port: 2525)) == "[::1]:2525")
        #expect(handoff.describeLocal(try SocketAddress(ipAddress: "127.0.0.1", port: 1026)) == "127.0.0.1:1026")
        #expect(handoff.describeLocal(nil) == "unknown")
    }
}
