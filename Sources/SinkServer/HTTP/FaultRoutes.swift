import Foundation
import Hummingbird
import NIOCore
import SwallowConfig

/// The live fault rules over HTTP:
///
/// - `GET /api/v1/faults`: the seed, the rule set (each rule as written, plus `fired`), the
///   "next N" rules still waiting, and the Mailpit/MailHog compatibility rules in force.
/// - `PUT /api/v1/faults`: replaces the rule set atomically with a rule document (YAML or
///   JSON, the `--faults` format); a bad rule is a 400 naming the rule and field, and nothing
///   changes.
/// - `DELETE /api/v1/faults`: clears the rule set and the "next N" rules.
/// - `POST /api/v1/faults/next`: `{"count": N, "rule": {...}}` makes exactly the next N
///   events the rule matches fire, then it retires ("fail the next send").
/// - Mailpit's `GET/PUT /api/v1/chaos` and MailHog's `GET/POST/PUT/DELETE /api/v2/jim`, in
///   their own shapes, mapped onto the same engine.
///
/// `?mailbox=N` (on the first four; implied by a mailbox token) works on mailbox N's own rules,
/// consulted before the global set for its transactions; N must have been created (404).
enum FaultRoutes {
    static func add(to router: Router<BasicRequestContext>, engine: FaultEngine, mailboxes: MailboxRegistry) {
        /// The `mailbox` parameter: nil for the global set, 404 for a mailbox never created.
        @Sendable func scope(_ request: Request) throws -> String? {
            guard let name = request.uri.queryParameters.get("mailbox") else { return nil }
            guard mailboxes.record(name) != nil else { throw HTTPError(.notFound, message: "unknown mailbox \(name)") }
            return name
        }

        router.get("/api/v1/faults") { request, _ -> Response in
            try describe(engine, mailbox: try scope(request))
        }

        router.put("/api/v1/faults") { request, _ -> Response in
            let mailbox = try scope(request)
            var request = request
            let body = try await request.collectBody(upTo: SinkAPI.maxBodyBytes)
            do {
                engine.replace(try FaultRuleSet.parse(String(buffer: body), file: "request body", acceptingReadOnlyKeys: true), mailbox: mailbox)
            } catch let error as InputError {
                throw HTTPError(.badRequest, message: error.description)
            }
            return try describe(engine, mailbox: mailbox)
        }

        router.delete("/api/v1/faults") { request, _ -> Response in
            let mailbox = try scope(request)
            engine.clear(mailbox: mailbox)
            return try describe(engine, mailbox: mailbox)
        }

        router.post("/api/v1/faults/next") { request, _ -> Response in
            let mailbox = try scope(request)
            var request = request
            let body = try await request.collectBody(upTo: SinkAPI.maxBodyBytes)
            let (rule, count): (FaultRule, Int)
            do {
                (rule, count) = try parseNext(String(buffer: body))
            } catch let error as InputError {
                throw HTTPError(.badRequest, message: error.description)
            }
            let name = engine.addNext(rule, count: count, mailbox: mailbox)
            return try SinkAPI.json(["name": AnyEncodable(name), "count": AnyEncodable(count)], sortedKeys: true, status: .created)
        }

        // MARK: Mailpit chaos

        router.get("/api/v1/chaos") { _, _ -> Response in
            try SinkAPI.json(engine.chaos)
        }

        router.put("/api/v1/chaos") { request, _ -> Response in
            var request = request
            let body = try await request.collectBody(upTo: SinkAPI.maxBodyBytes)
            do {
                engine.setChaos(try MailpitChaos.parse(Data(body.readableBytesView)))
            } catch let error as FaultRuleError {
                throw HTTPError(.badRequest, message: error.description)
            }
            return try SinkAPI.json(engine.chaos)
        }

        // MARK: MailHog Jim

        router.get("/api/v2/jim") { _, _ -> Response in
            guard let jim = engine.jim else { throw HTTPError(.notFound) }
            return try SinkAPI.json(jim)
        }

        router.post("/api/v2/jim") { request, _ -> Response in
            guard engine.jim == nil else { throw HTTPError(.badRequest, message: "Jim is already enabled") }
            let jim = try await jimBody(request, base: MailHogJim())
            engine.setJim(jim)
            return try SinkAPI.json(jim, status: .created)
        }

        router.put("/api/v2/jim") { request, _ -> Response in
            guard let current = engine.jim else { throw HTTPError(.notFound) }
            let jim = try await jimBody(request, base: current)
            engine.setJim(jim)
            return try SinkAPI.json(jim)
        }

        router.delete("/api/v2/jim") { _, _ -> Response in
            guard engine.jim != nil else { throw HTTPError(.notFound) }
            engine.setJim(nil)
            return SinkAPI.plain("ok")
        }
    }

    private static func jimBody(_ request: Request, base: MailHogJim) async throws -> MailHogJim {
        var request = request
        let body = try await request.collectBody(upTo: SinkAPI.maxBodyBytes)
        do {
            return try base.updated(with: Data(body.readableBytesView))
        } catch let error as FaultRuleError {
            throw HTTPError(.badRequest, message: error.description)
        }
    }

    /// `{"count": N, "rule": {...}}`, YAML or JSON; count defaults to 1.
    static func parseNext(_ text: String) throws(InputError) -> (FaultRule, Int) {
        let root = try YAMLReader.parse(text, file: "request body")
        _ = try root.keys(allowed: ["count", "rule"])
        let count = try root.optional("count")?.int(in: 1...1_000_000) ?? 1
        let rule = try FaultRuleSet.parseRule(try root.required("rule"), defaultName: "")
        return (rule, count)
    }

    private static func describe(_ engine: FaultEngine, mailbox: String?) throws -> Response {
        let snapshot = engine.snapshot(mailbox: mailbox)
        func list(_ rules: [ActiveRule]) -> JSONValue {
            .array(
                rules.map { active in
                    guard case .object(var entries) = active.rule.source else { return active.rule.source }
                    if !entries.contains(where: { $0.0 == "name" }) { entries.insert(("name", .string(active.rule.name)), at: 0) }
                    entries.append(("fired", .int(active.fired)))
                    if let times = active.rule.times { entries.append(("remaining", .int(max(0, times - active.fired)))) }
                    return .object(entries)
                })
        }
        var entries: [(String, JSONValue)] = [
            ("seed", .int(Int(bitPattern: UInt(snapshot.seed)))),
            ("rules", list(snapshot.rules)),
            ("next", list(snapshot.next)),
            ("compat", list(snapshot.compat)),
            ("fired", .object(engine.firedCounts(mailbox: mailbox).sorted { $0.key < $1.key }.map { ($0.key, .int($0.value)) })),
        ]
        if let mailbox { entries.append(("mailbox", .string(mailbox))) }
        let value = JSONValue.object(entries)
        return try SinkAPI.json(value)
    }
}
