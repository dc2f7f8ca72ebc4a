import NIOCore
import SocketIO

/// The connection's side of every message's session metadata, described once per connection.
struct Peer {
    var sessionID = ""
    var remote = "unknown"
    var local = "unknown"
    var remoteIP = "unknown"
    /// A message of the HTTP send API.
    var viaHTTP = false

    init() {}

    /// The peer of a `POST /api/v1/send` session: named `http-api`, for fault rules too.
    static func httpAPI(sessionID: String) -> Peer {
        var peer = Peer()
        peer.sessionID = sessionID
        peer.remote = "http-api"
        peer.local = "http-api"
        peer.remoteIP = "http-api"
        peer.viaHTTP = true
        return peer
    }

    /// `local`: the local address as `AddressText.describe` writes it, which the connections
    /// of one listener share (`LoopHandoff.describeLocal`).
    init(sessionID: String, remote: SocketAddress?, local: String) {
        self.sessionID = sessionID
        // The remote IP formatted once, for both fields.
        let remoteIP = remote.flatMap(AddressText.ip)
        self.remote = remote.map { AddressText.describe($0, ip: remoteIP) } ?? "unknown"
        self.local = local
        self.remoteIP = remoteIP ?? "unknown"
    }
}
