import Foundation
import SMTPClient

/// A real mail server the sink hands mail on to (`--relay`, `--upstream`), from a URL:
/// `smtp://[USER:PASSWORD@]HOST:PORT[?tls=none|starttls|implicit&verify=true|false]`.
///
/// Without `tls=`, STARTTLS is used when the server offers it and skipped when it does not;
/// `tls=starttls` requires it. Certificates are verified unless `verify=false`. User and
/// password may be percent-encoded (`%40` for `@`).
public struct Upstream: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var tls: SMTPClientSettings.TLSMode
    /// True when the URL named no `tls=`: STARTTLS only when offered.
    public var tlsOptional: Bool
    public var verify: Bool
    public var user: String?
    public var password: String?

    /// The URL without the password: what records, logs and metrics name.
    public var description: String {
        var text = "smtp://"
        if let user { text += "\(user)@" }
        text += host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        return text
    }

    /// Why a URL cannot be used, naming the part at fault.
    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public var description: String
        public init(description: String) { self.description = description }
    }

    public init(url text: String) throws(Invalid) {
        func invalid(_ reason: String) -> Invalid { Invalid(description: "\(Self.redacted(text)): \(reason)") }
        guard let schemeEnd = text.range(of: "://") else { throw invalid("expected smtp://HOST:PORT") }
        let scheme = text[..<schemeEnd.lowerBound].lowercased()
        guard scheme == "smtp" else { throw invalid("scheme must be smtp, not \(scheme.isEmpty ? "nothing" : scheme)") }
        var rest = text[schemeEnd.upperBound...]
        var query: Substring = ""
        if let mark = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: mark)...]
            rest = rest[..<mark]
        }
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        guard !rest.contains("/") else { throw invalid("no path is allowed after HOST:PORT") }
        var hostPort = rest
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            hostPort = rest[rest.index(after: at)...]
            guard let colon = userInfo.firstIndex(of: ":") else { throw invalid("user: expected USER:PASSWORD before @") }
            guard let user = Self.percentDecoded(userInfo[..<colon]), !user.isEmpty else { throw invalid("user: empty or badly percent-encoded") }
            guard let password = Self.percentDecoded(userInfo[userInfo.index(after: colon)...]) else {
                throw invalid("password: badly percent-encoded")
            }
            self.user = user
            self.password = password
        } else {
            user = nil
            password = nil
        }
        let portText: Substring
        if hostPort.hasPrefix("[") {
            guard let close = hostPort.firstIndex(of: "]") else { throw invalid("host: unclosed [ of an IPv6 address") }
            host = String(hostPort[hostPort.index(after: hostPort.startIndex)..<close])
            let after = hostPort[hostPort.index(after: close)...]
            guard after.hasPrefix(":") else { throw invalid("port: expected HOST:PORT") }
            portText = after.dropFirst()
        } else {
            guard let colon = hostPort.lastIndex(of: ":") else { throw invalid("port: expected HOST:PORT") }
            host = String(hostPort[..<colon])
            portText = hostPort[hostPort.index(after: colon)...]
        }
        guard !host.isEmpty else { throw invalid("host: empty") }
        guard let port = Int(portText), (1...65_535).contains(port) else { throw invalid("port: expected 1 to 65535, got \(portText)") }
        self.port = port
        tls = .starttls
        tlsOptional = true
        verify = true
        for pair in query.split(separator: "&") where !pair.isEmpty {
            let parts = pair.split(separator: "=", maxSplits: 1)
            let key = parts[0].lowercased()
            let value = parts.count > 1 ? parts[1].lowercased() : ""
            switch key {
            case "tls":
                guard let mode = SMTPClientSettings.TLSMode(rawValue: value) else {
                    throw invalid("tls: expected none, starttls or implicit, got \(value)")
                }
                tls = mode
                tlsOptional = false
            case "verify":
                guard value == "true" || value == "false" else { throw invalid("verify: expected true or false, got \(value)") }
                verify = value == "true"
            default:
                throw invalid("unknown parameter \(key) (expected tls or verify)")
            }
        }
    }

    /// The client settings for connections to this upstream.
    func clientSettings(helo: String, timeout: Double) -> SMTPClientSettings {
        var settings = SMTPClientSettings()
        settings.tls = tls
        settings.tlsOptional = tlsOptional
        settings.verifyCertificate = verify
        if let user, let password { settings.auth = .init(mechanism: "PLAIN", user: user, password: password) }
        settings.helo = helo
        settings.pipelining = true
        settings.connectTimeout = min(timeout, 10)
        settings.replyTimeout = timeout
        return settings
    }

    /// The URL with any password replaced, for error messages.
    static func redacted(_ text: String) -> String {
        guard let schemeEnd = text.range(of: "://"), let at = text[schemeEnd.upperBound...].lastIndex(of: "@") else { return text }
        let userInfo = text[schemeEnd.upperBound..<at]
        guard let colon = userInfo.firstIndex(of: ":") else { return text }
        return String(text[..<colon]) + ":***" + String(text[at...])
    }

    private static func percentDecoded(_ text: Substring) -> String? {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(Self.hexValue), let low = iterator.next().flatMap(Self.hexValue) else { return nil }
            bytes.append(high << 4 | low)
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
