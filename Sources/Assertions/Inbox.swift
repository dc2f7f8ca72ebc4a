import Foundation
import MailMessage

/// Where checks find delivered mail: a sink in the same process (`SwallowTesting.TestSink`) or
/// a running sink's HTTP API (`HTTPInbox`).
public protocol Inbox: Sendable {
    /// Every delivered message matching the query now, newest first.
    func messages(matching query: MailQuery) async throws -> [DeliveredMessage]
    /// Waits until at least `count` messages match, at most `within`; returns them, newest first.
    /// Throws `InboxError.timedOut` with what was found instead.
    func waitFor(_ query: MailQuery, count: Int, within: Duration) async throws -> [DeliveredMessage]
}

extension Inbox {
    /// Waits for one matching message and returns the newest.
    @discardableResult
    public func waitFor(_ query: MailQuery, within: Duration = .seconds(5)) async throws -> DeliveredMessage {
        try await waitFor(query, count: 1, within: within)[0]
    }

    /// Checks that no message matches, after waiting out `within` (so late mail counts).
    public func expectNone(_ query: MailQuery, within: Duration) async throws {
        try await Task.sleep(for: within)
        let found = try await messages(matching: query)
        guard found.isEmpty else { throw InboxError.unexpected(query: query, found: found.map(\.subject)) }
    }
}

public enum InboxError: Error, CustomStringConvertible {
    case timedOut(query: MailQuery, expected: Int, found: Int, newest: [String])
    case unexpected(query: MailQuery, found: [String])
    case api(String)

    public var description: String {
        switch self {
        case .timedOut(let query, let expected, let found, let newest):
            "expected \(expected) message(s) matching \(query), found \(found)"
                + (newest.isEmpty ? "" : "; newest: \(newest.joined(separator: " | "))")
        case .unexpected(let query, let found):
            "expected no message matching \(query), found \(found.count): \(found.joined(separator: " | "))"
        case .api(let text): text
        }
    }
}

/// The names of an earlier release, kept for one more: `Mailbox` now means only the SMTP
/// address (`SMTPProtocol.Mailbox`) and the sink's mailboxes.
@available(*, deprecated, renamed: "HTTPInbox")
public typealias HTTPMailbox = HTTPInbox
@available(*, deprecated, renamed: "InboxError")
public typealias MailboxError = InboxError
