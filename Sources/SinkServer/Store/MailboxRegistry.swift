import Foundation
import Logging
import SwallowConfig
import Synchronization

/// The mailboxes created over the API (`POST /api/v1/mailboxes`): each with its token, quota
/// and retention. Mail is filed under a mailbox by name whether or not it was created (see
/// `MailboxFiling.names`); a created one adds a token that narrows the API to it, its own quota and
/// TTL. With `--data DIR` the registry is kept in `DIR/mailboxes.json`, so tokens survive a
/// restart.
public final class MailboxRegistry: Sendable {
    /// One created mailbox.
    public struct Record: Codable, Hashable, Sendable {
        public var name: String
        public var token: String
        /// Messages kept, its own oldest evicted past it; nil: `--mailbox-quota` (0: no limit).
        public var quota: Int?
        /// Messages older than this are removed, as written (`1h`); nil: kept.
        public var ttl: String?
        /// `ttl` in seconds.
        public var ttlSeconds: Double?
        public var created: Date
    }

    /// A field of a create request that cannot be used.
    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public var field: String
        public var reason: String
        public var description: String { "\(field): \(reason)" }
    }

    public enum CreateError: Error, Sendable {
        case invalid(Invalid)
        case exists(String)
    }

    /// `--mailbox-quota`: the quota of every mailbox that has none of its own, implicit ones
    /// included (0: none).
    public let defaultQuota: Int
    private let state = Mutex<[String: Record]>([:])
    private let file: String?
    private let logger: Logger

    init(defaultQuota: Int, dataDirectory: String?, logger: Logger) {
        self.defaultQuota = defaultQuota
        self.logger = logger
        file = dataDirectory.map { ($0 as NSString).appendingPathComponent("mailboxes.json") }
        if let file, let data = FileManager.default.contents(atPath: file) {
            do {
                let records = try JSONDecoder().decode([Record].self, from: data)
                state.withLock { state in for record in records { state[record.name] = record } }
            } catch {
                logger.error(
                    "cannot read the mailbox registry; starting without created mailboxes", metadata: ["path": "\(file)", "error": "\(error)"])
            }
        }
    }

    /// Lowercase letters, digits, `-` and `_`, 1 to 64 of them.
    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64
            && name.utf8.allSatisfy { (0x61...0x7a).contains($0) || (0x30...0x39).contains($0) || $0 == 0x2d || $0 == 0x5f }
    }

    /// Creates a mailbox; `name` nil makes one up.
    public func create(name: String?, quota: Int?, ttl: String?) throws(CreateError) -> Record {
        if let name, !Self.isValidName(name) {
            throw .invalid(Invalid(field: "Name", reason: "expected 1 to 64 lowercase letters, digits, - or _"))
        }
        if let quota, quota < 0 { throw .invalid(Invalid(field: "Quota", reason: "expected 0 (no limit) or more")) }
        var ttlSeconds: Double?
        if let ttl {
            let days = ttl.hasSuffix("d") ? Double(ttl.dropLast()).map { $0 * 86_400 } : nil
            guard let seconds = days ?? Quantity.duration(ttl), seconds > 0, seconds.isFinite else {
                throw .invalid(Invalid(field: "TTL", reason: "expected a duration such as 30m, 1h or 7d"))
            }
            ttlSeconds = seconds
        }
        let record: Record? = state.withLock { state in
            var chosen = name ?? Self.generatedName()
            if name == nil { while state[chosen] != nil { chosen = Self.generatedName() } }
            guard state[chosen] == nil else { return nil }
            let record = Record(name: chosen, token: Self.generatedToken(), quota: quota, ttl: ttl, ttlSeconds: ttlSeconds, created: Date())
            state[chosen] = record
            return record
        }
        guard let record else { throw .exists(name ?? "") }
        save()
        return record
    }

    /// Removes a created mailbox (its token stops working); false when there was none.
    @discardableResult
    public func remove(_ name: String) -> Bool {
        let removed = state.withLock { $0.removeValue(forKey: name) != nil }
        if removed { save() }
        return removed
    }

    public func record(_ name: String) -> Record? { state.withLock { $0[name] } }

    /// Every created mailbox, by name.
    public var records: [Record] { state.withLock { Array($0.values) }.sorted { $0.name < $1.name } }

    /// The mailbox whose token this is.
    public func name(forToken token: String) -> String? {
        state.withLock { state in state.values.first { constantTimeEqual($0.token, token) }?.name }
    }

    /// The quota in force for each name (0: none).
    func quotas(for names: [String]) -> [Int] {
        guard !names.isEmpty else { return [] }
        return state.withLock { state in names.map { state[$0]?.quota ?? defaultQuota } }
    }

    /// Created mailboxes with a TTL, as (name, seconds).
    var retentions: [(name: String, seconds: Double)] {
        state.withLock { state in state.values.compactMap { record in record.ttlSeconds.map { (record.name, $0) } } }
    }

    private func save() {
        guard let file else { return }
        let records = self.records
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(records).write(to: URL(fileURLWithPath: file), options: .atomic)
        } catch {
            logger.error("cannot save the mailbox registry", metadata: ["path": "\(file)", "error": "\(error)"])
        }
    }

    private static func generatedName() -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")
        return "mb-" + String((0..<10).map { _ in alphabet.randomElement()! })
    }

    /// 160 random bits, hex.
    private static func generatedToken() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<20).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
    }
}
