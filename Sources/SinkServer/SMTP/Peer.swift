import NIOCore

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

    init(sessionID: String, remote: SocketAddress?, local: SocketAddress?) {
        self.sessionID = sessionID
        self.remote = remote.map(Self.describe) ?? "unknown"
        self.local = local.map(Self.describe) ?? "unknown"
        self.remoteIP = remote?.ipAddress ?? "unknown"
    }

    static func describe(_ address: SocketAddress) -> String {
        guard let ip = address.ipAddress, let port = address.port else { return "\(address)" }
        return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
}
