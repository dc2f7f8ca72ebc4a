import Foundation
import SMTPClient
import SwallowConfig

/// A load scenario: when messages are sent (`arrival`), which (`mix` of `templates`), how
/// (`connection`, `retry`), and what must hold (`expect`). The YAML format is DESIGN.md's
/// "A scenario file"; `Scenario.load(path:)` reads it with errors that name file, line and field.
public struct Scenario: Sendable {
    public var name: String
    /// Seconds; the run stops scheduling after it. Either this or `count` (or both: first reached).
    public var duration: Double?
    public var count: Int?
    public var arrival: Arrival
    public var mix: [(template: String, weight: Double)]
    public var templates: [String: Template]
    public var connection: ConnectionSettings
    public var retry: RetryPolicy
    public var expect: [Expectation]
    /// `expect.content`: checks on every delivered message of a template.
    public var content: [ContentExpectation] = []
    /// The directory relative paths (trace files, `.eml` templates, user lists) are read from.
    public var baseDirectory: String

    public enum Arrival: Sendable, Equatable {
        /// `rate` messages per second, evenly spaced.
        case constant(rate: Double)
        /// Exponential gaps with mean `1/rate`.
        case poisson(rate: Double)
        /// Linear change of rate from the previous stage's target (0 at first) to `to` over `over` seconds.
        case ramp(stages: [RampStage])
        /// `count` messages at once at offset `at`.
        case burst(bursts: [Burst])
        /// Offsets (and optional template names) from a CSV file, played at `speed`.
        case trace(file: String, speed: Double)
        /// `senders` virtual senders, each sending its next message when the last is answered.
        case closed(senders: Int)
    }

    public struct RampStage: Sendable, Equatable {
        public var to: Double
        public var over: Double
    }

    public struct Burst: Sendable, Equatable {
        public var at: Double
        public var count: Int
    }

    public struct ConnectionSettings: Sendable {
        public var pool = 10
        /// Messages sent over one connection before it is closed and opened again (0: no limit).
        public var perConnection = 100
        public var pipelining = true
        public var tls: TLSMode = .none
        public var auth: Auth?
        public var helo = "swallow-load.localhost"
        /// `connection.targets`: `HOST:PORT`s the connections are spread over evenly (`--target`
        /// overrides); empty: the one target given to the runner.
        public var targets: [String] = []
        /// `connection.bind`: local addresses the connections are bound to, spread evenly, so a
        /// relay's per-client limits can be exercised (`--bind` overrides); empty: the system's choice.
        public var bind: [String] = []
        /// Seconds to wait for the connection, and for each reply.
        public var connectTimeout = 10.0
        public var replyTimeout = 60.0

        public typealias TLSMode = SMTPClientSettings.TLSMode
        public typealias Auth = SMTPClientSettings.Auth

        /// The settings of the shared SMTP client these amount to.
        var client: SMTPClientSettings {
            var client = SMTPClientSettings()
            client.tls = tls
            client.auth = auth
            client.helo = helo
            client.pipelining = pipelining
            client.connectTimeout = connectTimeout
            client.replyTimeout = replyTimeout
            return client
        }
    }

    public struct RetryPolicy: Sendable {
        /// Retries after a 4xx reply (0: give up at once, as the first reply is final).
        public var on4xx = 0
        /// Seconds before the first retry; doubled each time.
        public var backoff = 1.0
    }
}

extension Scenario {
    public static func load(path: String) throws(InputError) -> Scenario {
        try parse(try YAMLReader.read(path: path), file: path, baseDirectory: (path as NSString).deletingLastPathComponent)
    }

    public static func parse(_ text: String, file: String = "scenario", baseDirectory: String = ".") throws(InputError) -> Scenario {
        let root = try YAMLReader.parse(text, file: file)
        _ = try root.keys(allowed: ["name", "duration", "count", "arrival", "connection", "retry", "mix", "templates", "expect", "seed"])
        let name = try root.optional("name")?.string() ?? ((file as NSString).lastPathComponent as NSString).deletingPathExtension
        let duration = try root.optional("duration")?.duration()
        let count = try root.optional("count")?.int(in: 1...100_000_000)
        let arrival = try parseArrival(try root.required("arrival"))
        if duration == nil && count == nil {
            switch arrival {
            case .burst, .trace: break
            default: throw root.error("give `duration` or `count` (the run must end by itself)")
            }
        }
        var templates: [String: Template] = [:]
        for (templateName, reader) in try root.required("templates").entries() {
            templates[templateName] = try Template.parse(reader, name: templateName, baseDirectory: baseDirectory)
        }
        var mix: [(String, Double)] = []
        if let mixReader = try root.optional("mix") {
            for item in try mixReader.items() {
                _ = try item.keys(allowed: ["template", "weight"])
                let templateReader = try item.required("template")
                let template = try templateReader.string()
                guard templates[template] != nil else { throw templateReader.error("no template named `\(template)` under `templates`") }
                mix.append((template, try item.optional("weight")?.double(in: 0...1e9) ?? 1))
            }
            guard mix.contains(where: { $0.1 > 0 }) else { throw mixReader.error("at least one weight must be above 0") }
        } else {
            guard templates.count == 1, let only = templates.keys.first else {
                throw root.error("give a `mix` when there is more than one template")
            }
            mix = [(only, 1)]
        }
        let expectReader = try root.optional("expect")
        let content =
            try expectReader.flatMap { (reader: YAMLReader) throws(InputError) in try reader.optional("content") }
            .map { (reader: YAMLReader) throws(InputError) in try ContentExpectation.parse(reader, templates: Set(templates.keys)) } ?? []
        var scenario = Scenario(
            name: name,
            duration: duration,
            count: count,
            arrival: arrival,
            mix: mix,
            templates: templates,
            connection: try parseConnection(try root.optional("connection")),
            retry: try parseRetry(try root.optional("retry")),
            expect: try expectReader.map(Expectation.parse) ?? [],
            baseDirectory: baseDirectory
        )
        scenario.content = content
        return scenario
    }

    private static func parseArrival(_ reader: YAMLReader) throws(InputError) -> Arrival {
        let kind = try reader.required("kind")
        switch try kind.string() {
        case "constant":
            _ = try reader.keys(allowed: ["kind", "rate"])
            return .constant(rate: try reader.required("rate").rate())
        case "poisson":
            _ = try reader.keys(allowed: ["kind", "rate"])
            return .poisson(rate: try reader.required("rate").rate())
        case "ramp":
            _ = try reader.keys(allowed: ["kind", "stages"])
            let stages = try reader.required("stages").items().map { (stage: YAMLReader) throws(InputError) -> RampStage in
                _ = try stage.keys(allowed: ["to", "over"])
                let toReader = try stage.required("to")
                guard let to = Quantity.rate(try toReader.string()) else { throw toReader.error("expected a rate such as 200/s") }
                return RampStage(to: to, over: try stage.required("over").duration())
            }
            guard !stages.isEmpty else { throw reader.error("`stages` needs at least one stage") }
            return .ramp(stages: stages)
        case "burst":
            _ = try reader.keys(allowed: ["kind", "bursts"])
            let bursts = try reader.required("bursts").items().map { (burst: YAMLReader) throws(InputError) -> Burst in
                _ = try burst.keys(allowed: ["at", "count"])
                return Burst(at: try burst.required("at").duration(), count: try burst.required("count").int(in: 1...10_000_000))
            }
            guard !bursts.isEmpty else { throw reader.error("`bursts` needs at least one burst") }
            return .burst(bursts: bursts)
        case "trace":
            _ = try reader.keys(allowed: ["kind", "file", "speed"])
            let speed = try reader.optional("speed")?.double(in: 0.000_001...1_000_000) ?? 1
            return .trace(file: try reader.required("file").string(), speed: speed)
        case "closed":
            _ = try reader.keys(allowed: ["kind", "senders"])
            return .closed(senders: try reader.required("senders").int(in: 1...100_000))
        case let other:
            throw kind.error("unknown arrival kind `\(other)` (expected constant, poisson, ramp, burst, trace or closed)")
        }
    }

    private static func parseConnection(_ reader: YAMLReader?) throws(InputError) -> ConnectionSettings {
        var settings = ConnectionSettings()
        guard let reader else { return settings }
        _ = try reader.keys(allowed: ["pool", "per_connection", "pipelining", "tls", "auth", "helo", "connect_timeout", "timeout", "targets", "bind"])
        for key in ["targets", "bind"] {
            guard let list = try reader.optional(key) else { continue }
            let values =
                list.isSequence
                ? try list.items().map { (item: YAMLReader) throws(InputError) in try item.string() }
                : try list.string().split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            guard !values.isEmpty, values.allSatisfy({ !$0.isEmpty }) else { throw list.error("expected a list of addresses") }
            if key == "targets" {
                for value in values where LoadTarget(parsing: value) == nil { throw list.error("expected HOST:PORT, got \(value)") }
                settings.targets = values
            } else {
                settings.bind = values
            }
        }
        if let pool = try reader.optional("pool") { settings.pool = try pool.int(in: 1...10_000) }
        if let per = try reader.optional("per_connection") { settings.perConnection = try per.int(in: 0...100_000_000) }
        if let pipelining = try reader.optional("pipelining") { settings.pipelining = try pipelining.bool() }
        if let tls = try reader.optional("tls") {
            guard let mode = ConnectionSettings.TLSMode(rawValue: try tls.string()) else {
                throw tls.error("expected none, starttls or implicit")
            }
            settings.tls = mode
        }
        if let auth = try reader.optional("auth") {
            _ = try auth.keys(allowed: ["mechanism", "user", "password"])
            let mechanismReader = try auth.optional("mechanism")
            let mechanism = try mechanismReader?.string().uppercased() ?? "PLAIN"
            guard ["PLAIN", "LOGIN"].contains(mechanism) else { throw (mechanismReader ?? auth).error("expected plain or login") }
            settings.auth = .init(mechanism: mechanism, user: try auth.required("user").string(), password: try auth.required("password").string())
        }
        if let helo = try reader.optional("helo") { settings.helo = try helo.string() }
        if let timeout = try reader.optional("connect_timeout") { settings.connectTimeout = try timeout.duration() }
        if let timeout = try reader.optional("timeout") { settings.replyTimeout = try timeout.duration() }
        return settings
    }

    private static func parseRetry(_ reader: YAMLReader?) throws(InputError) -> RetryPolicy {
        var policy = RetryPolicy()
        guard let reader else { return policy }
        _ = try reader.keys(allowed: ["on_4xx", "backoff"])
        if let on4xx = try reader.optional("on_4xx") {
            if let text = try? on4xx.string(), text == "give_up" || text == "give-up" {
                policy.on4xx = 0
            } else {
                policy.on4xx = try on4xx.int(in: 0...100)
            }
        }
        if let backoff = try reader.optional("backoff") { policy.backoff = try backoff.duration() }
        return policy
    }
}
