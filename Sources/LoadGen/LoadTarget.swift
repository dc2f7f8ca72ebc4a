/// A `HOST:PORT` the load generator connects to (`--target`, `connection.targets`).
public struct LoadTarget: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// `127.0.0.1:1025`, `[::1]:1025`, `mail.example:25`.
    public init?(parsing text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else {
            return nil
        }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self.init(host: host, port: port)
    }

    /// Comma-separated targets; nil when one does not parse.
    public static func list(_ text: String) -> [LoadTarget]? {
        let parts = text.split(separator: ",").map { String($0).trimmingCharacters(in: [" "]) }
        let targets = parts.compactMap(LoadTarget.init(parsing:))
        return targets.count == parts.count && !targets.isEmpty ? targets : nil
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

extension String {
    fileprivate func trimmingCharacters(in set: Set<Character>) -> String {
        String(drop { set.contains($0) }.reversed().drop { set.contains($0) }.reversed())
    }
}
