import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import MailMessage
import NIOCore
import ServiceLifecycle
import SwallowConfig
import Synchronization

// Reading requests the way Mailpit and MailHog do (Go's form and JSON rules), and paging.
extension SinkAPI {
    /// The fields of a request body: JSON with keys matched case-insensitively (as Go's
    /// `encoding/json` does for Mailpit), or an HTML form (`ids=a&ids=b`, as the PyPI client
    /// sends). Values come back as strings; an empty body has no fields; anything else is a 400.
    static func bodyFields(_ body: ByteBuffer) throws -> [String: [String]] {
        let text = String(buffer: body).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !text.isEmpty else { return [:] }
        if text.hasPrefix("{") {
            guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
                throw HTTPError(.badRequest, message: "invalid JSON body")
            }
            var fields: [String: [String]] = [:]
            for (key, value) in object {
                switch value {
                case let list as [Any]: fields[key.lowercased()] = list.map { "\($0)" }
                case let flag as Bool: fields[key.lowercased()] = [flag ? "true" : "false"]
                case is NSNull: continue
                default: fields[key.lowercased()] = ["\(value)"]
                }
            }
            return fields
        }
        var fields: [String: [String]] = [:]
        for pair in text.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, let key = String(parts[0]).removingPercentEncoding,
                let value = String(parts[1]).replacingOccurrences(of: "+", with: " ").removingPercentEncoding
            else { throw HTTPError(.badRequest, message: "invalid request body: expected JSON or a form") }
            fields[key.lowercased().replacingOccurrences(of: "[]", with: ""), default: []].append(value)
        }
        return fields
    }

    /// A query-string value decoded as an HTML form does (`+` is a space), as Go's
    /// `url.Query` — and so Mailpit and MailHog — read it; with `plusIsSpace: false` only
    /// percent-decoded (an address's `+` stays a `+`).
    static func formValue(_ name: String, _ request: Request, plusIsSpace: Bool = true) -> String? {
        guard let raw = request.uri.query else { return nil }
        for pair in raw.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.first == Substring(name) else { continue }
            let value = parts.count > 1 ? String(parts[1]) : ""
            return (plusIsSpace ? value.replacingOccurrences(of: "+", with: " ") : value).removingPercentEncoding ?? value
        }
        return nil
    }

    static func plain(_ text: String) -> Response {
        Response(status: .ok, headers: [.contentType: "text/plain; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    static func json(
        _ value: some Encodable, sortedKeys: Bool = false, contentType: String = "application/json",
        status: HTTPResponse.Status = .ok
    ) throws -> Response {
        let encoder = MailpitJSON.encoder()
        if sortedKeys { encoder.outputFormatting.insert(.sortedKeys) }
        let data = try encoder.encode(value)
        return Response(status: status, headers: [.contentType: contentType], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// `start` and `limit` (default 50; 0 means no limit), as Mailpit pages.
    static func page<T>(_ items: [T], request: Request, defaultLimit: Int = 50, maxLimit: Int? = nil) -> (ArraySlice<T>, start: Int) {
        let query = request.uri.queryParameters
        let start = max(0, query.get("start", as: Int.self) ?? 0)
        var limit = max(0, query.get("limit", as: Int.self) ?? defaultLimit)
        if let maxLimit { limit = min(limit == 0 ? maxLimit : limit, maxLimit) }
        guard start < items.count else { return ([], start) }
        let end = limit == 0 ? items.count : min(items.count, start + limit)
        return (items[start..<end], start)
    }
}
