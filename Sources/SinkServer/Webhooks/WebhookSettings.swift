import Foundation

/// `--webhook URL` and its options: where every stored message (and, when asked, every drop
/// and fault firing) is POSTed as JSON.
public struct WebhookSettings: Sendable {
    /// One `--webhook URL`, with the `--webhook-mailbox` or `--webhook-query` that followed it.
    public struct Hook: Sendable {
        public var url: String
        public var mailbox: String?
        public var query: SearchQuery?

        public init(url: String, mailbox: String? = nil, query: SearchQuery? = nil) {
            self.url = url
            self.mailbox = mailbox
            self.query = query
        }
    }

    public enum Event: String, Sendable, CaseIterable {
        case message, drop, fault, relay
    }

    public var hooks: [Hook] = []
    /// `--webhook-secret`: signs each body, `X-Swallow-Signature: sha256=<hex HMAC-SHA256>`.
    public var secret: String?
    /// `--webhook-timeout`: an attempt that takes longer failed.
    public var timeout: Duration = .seconds(5)
    /// `--webhook-retries`: attempts per event in all, the first included.
    public var attempts = 8
    /// `--webhook-queue`: events waiting per webhook; one more is dropped and counted.
    public var queueSize = 10_000
    /// `--webhook-events`: which events are sent.
    public var events: Set<Event> = [.message]
    /// The first retry waits this long, each next one twice as long, at most `maxBackoff`.
    public var firstBackoff: Duration = .seconds(1)
    public var maxBackoff: Duration = .seconds(60)

    public init() {}

    public struct Invalid: Error, CustomStringConvertible {
        public var description: String

        public init(description: String) {
            self.description = description
        }
    }

    /// Reads the webhook options from a command line in order, so that `--webhook-mailbox` and
    /// `--webhook-query` apply to the `--webhook` before them (`--opt VALUE` or `--opt=VALUE`).
    public static func hooks(fromCommandLine arguments: [String]) throws(Invalid) -> [Hook] {
        var hooks: [Hook] = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            let (name, inline): (String, String?) =
                if let equals = argument.firstIndex(of: "="), argument.hasPrefix("--") {
                    (String(argument[..<equals]), String(argument[argument.index(after: equals)...]))
                } else {
                    (argument, nil)
                }
            guard ["--webhook", "--webhook-mailbox", "--webhook-query"].contains(name) else { continue }
            let value: String
            if let inline {
                value = inline
            } else {
                guard index < arguments.count else { throw Invalid(description: "\(name) needs a value") }
                value = arguments[index]
                index += 1
            }
            switch name {
            case "--webhook":
                guard let parsed = URLParts(value), ["http", "https"].contains(parsed.scheme) else {
                    throw Invalid(description: "--webhook: expected an http:// or https:// URL, got \(value)")
                }
                hooks.append(Hook(url: value))
            case "--webhook-mailbox":
                guard !hooks.isEmpty else { throw Invalid(description: "--webhook-mailbox \(value): give it after the --webhook it filters") }
                hooks[hooks.count - 1].mailbox = value
            default:
                guard !hooks.isEmpty else { throw Invalid(description: "--webhook-query \(value): give it after the --webhook it filters") }
                do {
                    hooks[hooks.count - 1].query = try SearchQuery(value)
                } catch {
                    throw Invalid(description: "--webhook-query \(value): \(error)")
                }
            }
        }
        return hooks
    }

    /// `message,drop,fault`.
    public static func events(_ text: String) throws(Invalid) -> Set<Event> {
        var events = Set<Event>()
        for name in text.split(separator: ",") {
            guard let event = Event(rawValue: name.trimmingCharacters(in: .whitespaces)) else {
                throw Invalid(description: "--webhook-events: expected message, drop or fault, got \(name)")
            }
            events.insert(event)
        }
        guard !events.isEmpty else { throw Invalid(description: "--webhook-events: name at least one of message, drop, fault") }
        return events
    }

    /// The scheme and host of a URL, enough to refuse what is not one.
    struct URLParts {
        var scheme: String
        var host: String

        init?(_ text: String) {
            guard let separator = text.range(of: "://") else { return nil }
            scheme = text[..<separator.lowerBound].lowercased()
            let rest = text[separator.upperBound...]
            host = String(rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" })
            guard !host.isEmpty, !text.contains(where: { $0.isWhitespace || $0.asciiValue.map { $0 < 32 } == true }) else { return nil }
        }
    }
}
