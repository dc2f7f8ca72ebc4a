import AsyncHTTPClient
import NIOCore
import NIOHTTP1

/// Plain HTTP GETs to a sink's API with AsyncHTTPClient (no URLSession: FoundationNetworking
/// would bring libcurl and its dependencies into the binary).
public enum SinkHTTP {
    /// One client for the process. A sink that cannot be reached is an answer at once: the
    /// shared client would retry the connection until the request's deadline (minutes for
    /// `/api/v1/wait`).
    public static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.timeout.connect = .seconds(10)
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }()

    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// GET `url`; the status and the whole body (at most `maxBytes`). `token` is sent as
    /// `Authorization: Bearer`.
    public static func get(
        _ url: String, timeout: TimeAmount = .seconds(330), maxBytes: Int = 256 * 1024 * 1024,
        token: String? = nil
    ) async throws -> (status: Int, body: [UInt8]) {
        var request = HTTPClientRequest(url: url)
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        let response = try await client.execute(request, timeout: timeout)
        let body = try await response.body.collect(upTo: maxBytes)
        return (Int(response.status.code), Array(body.readableBytesView))
    }

    /// POST `body` (JSON) to `url`; the status and the whole body. `token` as for `get`.
    public static func post(
        _ url: String, json body: String, timeout: TimeAmount = .seconds(30),
        token: String? = nil
    ) async throws -> (status: Int, body: [UInt8]) {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        request.body = .bytes(ByteBuffer(string: body))
        let response = try await client.execute(request, timeout: timeout)
        let answer = try await response.body.collect(upTo: 1024 * 1024)
        return (Int(response.status.code), Array(answer.readableBytesView))
    }

    /// `application/x-www-form-urlencoded`-style percent-encoding of a query value (a `+` is
    /// encoded, so the sink does not read it as a space).
    public static func queryValue(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
                out.unicodeScalars.append(UnicodeScalar(byte))
            default:
                let hex = Array("0123456789ABCDEF".utf8)
                out += "%" + String(UnicodeScalar(hex[Int(byte >> 4)])) + String(UnicodeScalar(hex[Int(byte & 0xF)]))
            }
        }
        return out
    }

    /// `BASE/path?name=value&...`, values encoded with `queryValue`.
    public static func url(_ base: String, _ path: String, _ query: [(String, String)] = []) -> String {
        var url = base.hasSuffix("/") ? String(base.dropLast()) : base
        url += path
        if !query.isEmpty { url += "?" + query.map { "\($0.0)=\(queryValue($0.1))" }.joined(separator: "&") }
        return url
    }
}
