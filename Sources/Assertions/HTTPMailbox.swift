import Foundation
import MailMessage
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A running sink's HTTP API as a `Mailbox`. Waiting is the sink's `GET /api/v1/wait` (it
/// waits on its event stream); messages are read as raw bytes and parsed here, so every
/// criterion of a `MailQuery` is checked, also those Mailpit's search syntax cannot express.
public struct HTTPMailbox: Mailbox {
    public var baseURL: URL
    /// Only this mailbox of the sink (an AUTH user or a plus tag), when set.
    public var mailbox: String?

    public init(baseURL: URL, mailbox: String? = nil) {
        self.baseURL = baseURL
        self.mailbox = mailbox
    }

    public func messages(matching query: MailQuery) async throws -> [DeliveredMessage] {
        try await fetch(query, count: ">=0", timeout: 0).matched
    }

    public func waitFor(_ query: MailQuery, count: Int, within: Duration) async throws -> [DeliveredMessage] {
        let deadline = ContinuousClock.now + within
        var seen = 0
        while true {
            let left = max(0, (deadline - ContinuousClock.now).components.seconds)
            let (matched, total) = try await fetch(query, count: ">=\(seen + 1)", timeout: Double(left))
            if matched.count >= count { return matched }
            // Messages matched the search but not every criterion: wait for the next one.
            guard ContinuousClock.now < deadline, total > seen else {
                throw MailboxError.timedOut(query: query, expected: count, found: matched.count, newest: matched.prefix(3).map(\.subject))
            }
            seen = total
        }
    }

    private func fetch(_ query: MailQuery, count: String, timeout: Double) async throws -> (matched: [DeliveredMessage], total: Int) {
        var components = URLComponents(url: baseURL.appendingPathComponent("api/v1/wait"), resolvingAgainstBaseURL: false)!
        components.queryItems = [URLQueryItem(name: "query", value: query.mailpitSearch), URLQueryItem(name: "count", value: count),
                                 URLQueryItem(name: "timeout", value: "\(Int(min(300, timeout)))s")]
            + (mailbox.map { [URLQueryItem(name: "mailbox", value: $0)] } ?? [])
        components.percentEncodedQuery = components.percentEncodedQuery?.replacingOccurrences(of: "+", with: "%2B")
        let (data, status) = try await get(components.url!)
        guard status == 200 || status == 408,
              let answer = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw MailboxError.api("GET /api/v1/wait answered \(status): \(String(decoding: data, as: UTF8.self))")
        }
        var matched: [DeliveredMessage] = []
        for item in answer["Messages"] as? [[String: Any]] ?? [] {
            guard let id = item["ID"] as? String else { continue }
            let (raw, rawStatus) = try await get(baseURL.appendingPathComponent("api/v1/message/\(id)/raw"))
            guard rawStatus == 200 else { continue }
            let created = (item["Created"] as? String).flatMap {
                try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse($0)
            } ?? Date()
            let message = DeliveredMessage(id: id, raw: Array(raw), received: created)
            if query.matches(message) { matched.append(message) }
        }
        return (matched, answer["Count"] as? Int ?? 0)
    }

    private func get(_ url: URL) async throws -> (Data, Int) {
        var request = URLRequest(url: url)
        request.timeoutInterval = 330
        let (data, response) = try await URLSession.shared.data(for: request)
        return (data, (response as? HTTPURLResponse)?.statusCode ?? 0)
    }
}

extension DeliveredMessage {
    /// From the raw bytes alone (over HTTP: no envelope; the trace id from its header).
    public init(id: String, raw: [UInt8], received: Date) {
        let parsed = ParsedMessage(bytes: raw)
        let empty = CapturedMessage(
            id: id, envelope: Envelope(mailFrom: "", recipients: []),
            session: SessionInfo(id: "", remoteAddress: "", localAddress: "", helo: "", esmtp: true),
            timestamps: CaptureTimestamps(connectedNanos: 0, mailNanos: 0, dataStartNanos: 0, dataEndNanos: 0),
            size: raw.count, receivedHeaderLength: 0,
            traceID: parsed.headers["X-Swallow-Trace"]
        )
        self.init(captured: empty, parsed: parsed, received: received)
    }
}

