import Foundation
import MailMessage

/// A running sink's HTTP API as an `Inbox`. Waiting is the sink's `GET /api/v1/wait` (it
/// waits on its event stream); messages are read as raw bytes and parsed here, so every
/// criterion of a `MailQuery` is checked, also those Mailpit's search syntax cannot express.
public struct HTTPInbox: Inbox {
    public var baseURL: URL
    /// Only this mailbox of the sink (an AUTH user or a plus tag), when set.
    public var mailbox: String?
    /// Sent as `Authorization: Bearer` (a sink started with API tokens).
    public var token: String?

    public init(baseURL: URL, mailbox: String? = nil, token: String? = nil) {
        self.baseURL = baseURL
        self.mailbox = mailbox
        self.token = token
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
                throw InboxError.timedOut(query: query, expected: count, found: matched.count, newest: matched.prefix(3).map(\.subject))
            }
            seen = total
        }
    }

    private func fetch(_ query: MailQuery, count: String, timeout: Double) async throws -> (matched: [DeliveredMessage], total: Int) {
        let url = SinkHTTP.url(
            baseURL.absoluteString, "/api/v1/wait",
            [
                ("query", query.mailpitSearch), ("count", count), ("timeout", "\(Int(min(300, timeout)))s"),
            ] + (mailbox.map { [("mailbox", $0)] } ?? []))
        let (data, status) = try await get(url)
        guard status == 200 || status == 408,
            let answer = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        else {
            throw InboxError.api("GET /api/v1/wait answered \(status): \(String(decoding: data, as: UTF8.self))")
        }
        var matched: [DeliveredMessage] = []
        for item in answer["Messages"] as? [[String: Any]] ?? [] {
            guard let id = item["ID"] as? String else { continue }
            let (raw, rawStatus) = try await get(SinkHTTP.url(baseURL.absoluteString, "/api/v1/message/\(id)/raw"))
            guard rawStatus == 200 else { continue }
            let created =
                (item["Created"] as? String).flatMap {
                    try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse($0)
                } ?? Date()
            let message = DeliveredMessage(id: id, raw: Array(raw), received: created)
            if query.matches(message) { matched.append(message) }
        }
        return (matched, answer["Count"] as? Int ?? 0)
    }

    private func get(_ url: String) async throws -> (Data, Int) {
        let (status, body) = try await SinkHTTP.get(url, token: token)
        return (Data(body), status)
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
