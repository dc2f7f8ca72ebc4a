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
        // The remote IP formatted once (`inet_ntop` and a string each time), for both fields.
        let remoteIP = remote?.ipAddress
        self.remote = remote.map { Self.describe($0, ip: remoteIP) } ?? "unknown"
        self.local = local.map { Self.describe($0) } ?? "unknown"
        self.remoteIP = remoteIP ?? "unknown"
    }

    static func describe(_ address: SocketAddress, ip known: String? = nil) -> String {
        guard let ip = known ?? address.ipAddress, let port = address.port else { return "\(address)" }
        return ip.utf8.contains(UInt8(ascii: ":")) ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
}
