import Foundation
import SMTPProtocol
import SwallowConfig

/// Mailpit's chaos triggers (`GET/PUT /api/v1/chaos`), in Mailpit's JSON shape, mapped onto
/// fault rules: `Sender` at MAIL, `Recipient` at RCPT, `Authentication` at AUTH, each
/// answering `ErrorCode` with `Probability` percent. Always available (Mailpit needs
/// `--enable-chaos`).
public struct MailpitChaos: Codable, Sendable, Equatable {
    public struct Trigger: Codable, Sendable, Equatable {
        public var ErrorCode = 451
        public var Probability = 0

        public init(errorCode: Int = 451, probability: Int = 0) {
            ErrorCode = errorCode
            Probability = probability
        }
    }

    public var Sender = Trigger()
    public var Recipient = Trigger()
    public var Authentication = Trigger()

    public init() {}

    /// The body of `PUT /api/v1/chaos`: a trigger left out is off. Values out of range are an
    /// error naming the trigger.
    public static func parse(_ body: Data) throws -> MailpitChaos {
        let object: [String: Any]
        if isBlank(body) {
            object = [:]
        } else {
            guard let parsed = try? JSONSerialization.jsonObject(with: body) as? [String: Any] else {
                throw FaultRuleError("invalid JSON body")
            }
            object = parsed
        }
        var chaos = MailpitChaos()
        for (key, value) in object {
            let trigger: Trigger
            guard let fields = value as? [String: Any] else { throw FaultRuleError("\(key): expected an object") }
            var parsed = Trigger()
            for (field, value) in fields {
                guard let number = value as? Int ?? (value as? Double).flatMap({ $0 == $0.rounded() ? Int($0) : nil }) else {
                    throw FaultRuleError("\(key).\(field): expected a whole number")
                }
                switch field.lowercased() {
                case "errorcode":
                    guard (400...599).contains(number) else { throw FaultRuleError("\(key).ErrorCode: must be between 400 and 599") }
                    parsed.ErrorCode = number
                case "probability":
                    guard (0...100).contains(number) else { throw FaultRuleError("\(key).Probability: must be between 0 and 100") }
                    parsed.Probability = number
                default:
                    throw FaultRuleError("\(key).\(field): unknown field (expected ErrorCode, Probability)")
                }
            }
            trigger = parsed
            switch key.lowercased() {
            case "sender": chaos.Sender = trigger
            case "recipient": chaos.Recipient = trigger
            case "authentication": chaos.Authentication = trigger
            default: throw FaultRuleError("\(key): unknown trigger (expected Sender, Recipient, Authentication)")
            }
        }
        return chaos
    }

    var rules: [FaultRule] {
        [("sender", Sender, FaultPhase.mail), ("recipient", Recipient, .rcpt), ("authentication", Authentication, .auth)]
            .compactMap { name, trigger, phase in
                guard trigger.Probability > 0 else { return nil }
                let reply = SMTPReply(
                    code: ReplyCode(rawValue: trigger.ErrorCode), enhanced: EnhancedStatusCode(trigger.ErrorCode / 100, 0, 0),
                    lines: ["Chaos error (Mailpit \(name) trigger)"])
                var rule = FaultRule(name: "mailpit-chaos-\(name)", match: FaultMatch(phases: [phase]), action: FaultAction(effect: .reply(reply)))
                rule.probability = Double(trigger.Probability) / 100
                rule.source = .object([
                    ("name", .string(rule.name)), ("match", .object([("phase", .string(phase.rawValue))])),
                    ("probability", .double(rule.probability!)),
                    ("action", .object([("reply", .object([("code", .int(trigger.ErrorCode))]))])),
                ])
                return rule
            }
    }
}

/// MailHog's chaos monkey Jim (`/api/v2/jim`), in MailHog's JSON shape, mapped onto fault
/// rules: a connection is refused with probability 1 - `AcceptChance` and throttled with
/// probability `LinkSpeedAffect` (at the midpoint of `LinkSpeedMin`...`LinkSpeedMax` bytes per
/// second); any command may end the connection with probability `DisconnectChance`; MAIL,
/// RCPT and AUTH are refused (550) with their own chances.
public struct MailHogJim: Codable, Sendable, Equatable {
    public var DisconnectChance = 0.005
    public var AcceptChance = 0.99
    public var LinkSpeedAffect = 0.1
    public var LinkSpeedMin = 1024.0
    public var LinkSpeedMax = 10240.0
    public var RejectSenderChance = 0.05
    public var RejectRecipientChance = 0.05
    public var RejectAuthChance = 0.05

    public init() {}

    /// `self` with the fields present in a JSON body changed (MailHog decodes into the
    /// current configuration). Chances must be within 0...1.
    public func updated(with body: Data) throws -> MailHogJim {
        guard !isBlank(body) else { return self }
        guard let object = try? JSONSerialization.jsonObject(with: body) as? [String: Any] else {
            throw FaultRuleError("invalid JSON body")
        }
        var jim = self
        for (key, value) in object {
            guard let number = value as? Double ?? (value as? Int).map(Double.init), number.isFinite, number >= 0 else {
                throw FaultRuleError("\(key): expected a number of at least 0")
            }
            let chance = number <= 1
            switch key {
            case "DisconnectChance" where chance: jim.DisconnectChance = number
            case "AcceptChance" where chance: jim.AcceptChance = number
            case "LinkSpeedAffect" where chance: jim.LinkSpeedAffect = number
            case "RejectSenderChance" where chance: jim.RejectSenderChance = number
            case "RejectRecipientChance" where chance: jim.RejectRecipientChance = number
            case "RejectAuthChance" where chance: jim.RejectAuthChance = number
            case "LinkSpeedMin": jim.LinkSpeedMin = number
            case "LinkSpeedMax": jim.LinkSpeedMax = number
            case "DisconnectChance", "AcceptChance", "LinkSpeedAffect", "RejectSenderChance", "RejectRecipientChance", "RejectAuthChance":
                throw FaultRuleError("\(key): a chance is between 0 and 1")
            default:
                throw FaultRuleError("\(key): unknown field")
            }
        }
        guard jim.LinkSpeedMax >= jim.LinkSpeedMin else { throw FaultRuleError("LinkSpeedMax: must not be less than LinkSpeedMin") }
        return jim
    }

    var rules: [FaultRule] {
        let commands: [FaultPhase] = [.ehlo, .starttls, .auth, .mail, .rcpt, .data, .quit]
        let speed = max(1, Int((LinkSpeedMin + LinkSpeedMax) / 2))
        let specs: [(String, [FaultPhase], Double, FaultAction.Effect)] = [
            ("accept", [.connect], 1 - AcceptChance, .disconnect(reply: nil, partial: nil)),
            ("linkspeed", [.connect], LinkSpeedAffect, .throttle(bytesPerSecond: speed)),
            ("disconnect", commands, DisconnectChance, .disconnect(reply: nil, partial: nil)),
            ("reject-sender", [.mail], RejectSenderChance, .reply(SMTPReply(550, "5.7.1", "Sender rejected (MailHog Jim)"))),
            ("reject-recipient", [.rcpt], RejectRecipientChance, .reply(SMTPReply(550, "5.7.1", "Recipient rejected (MailHog Jim)"))),
            ("reject-auth", [.auth], RejectAuthChance, .reply(SMTPReply(550, "5.7.8", "Authentication rejected (MailHog Jim)"))),
        ]
        return specs.compactMap { name, phases, chance, effect in
            guard chance > 0 else { return nil }
            var rule = FaultRule(name: "mailhog-jim-\(name)", match: FaultMatch(phases: phases), action: FaultAction(effect: effect))
            rule.probability = min(1, chance)
            rule.source = .object([
                ("name", .string(rule.name)), ("match", .object([("phase", .array(phases.map { .string($0.rawValue) }))])),
                ("probability", .double(min(1, chance))),
            ])
            return rule
        }
    }
}

/// An empty or whitespace-only request body (the compatibility routes' "no changes").
private func isBlank(_ body: Data) -> Bool {
    body.allSatisfy { $0 == 0x20 || $0 == 0x0a || $0 == 0x0d || $0 == 0x09 }
}
