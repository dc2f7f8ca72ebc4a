import Foundation
import Yams

/// A mistake in an input file, located: `file:line: field: message`.
public struct InputError: Error, CustomStringConvertible, Sendable {
    public var file: String
    public var line: Int?
    public var field: String
    public var message: String

    public init(file: String, line: Int?, field: String, message: String) {
        self.file = file
        self.line = line
        self.field = field
        self.message = message
    }

    public var description: String {
        let location = line.map { "\(file):\($0)" } ?? file
        return field.isEmpty ? "\(location): \(message)" : "\(location): \(field): \(message)"
    }
}

/// Reads a YAML document node by node, so every error names the file, the line and the field
/// path (`templates.otp.attachments[0].size`), and unknown keys are reported rather than ignored.
/// Scenario files (LoadGen) and fault rule files (SinkServer) are both read with it.
public struct YAMLReader {
    public let file: String
    let node: Node
    public let path: String

    /// A file's text, or an error naming it.
    public static func read(path: String) throws(InputError) -> String {
        do {
            return try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw InputError(file: path, line: nil, field: "", message: "cannot read the file: \(error.localizedDescription)")
        }
    }

    public static func parse(_ text: String, file: String) throws(InputError) -> YAMLReader {
        do {
            // UTF-8 named here: Yams's default encoding reads the process environment on every
            // parse (a tenth of a rule file's parse time under the fuzzer). The basic resolver:
            // this reader decides a scalar's type from what the field expects (`int()`,
            // `bool()`, `jsonValue()`), never from an implicit tag, so the default resolver's
            // seven regular expressions per scalar (run by the duplicate-key check) buy nothing.
            guard let node = try Yams.compose(yaml: text, .basic, .default, .utf8) else {
                throw InputError(file: file, line: nil, field: "", message: "the file is empty")
            }
            return YAMLReader(file: file, node: node, path: "")
        } catch let error as InputError {
            throw error
        } catch let error as YamlError {
            throw InputError(file: file, line: Self.line(of: error), field: "", message: "not valid YAML: \(error)")
        } catch {
            throw InputError(file: file, line: nil, field: "", message: "not valid YAML: \(error)")
        }
    }

    private static func line(of error: YamlError) -> Int? {
        switch error {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _): mark.line
        default: nil
        }
    }

    public var line: Int? { node.mark?.line }

    public func error(_ message: String) -> InputError {
        InputError(file: file, line: line, field: path, message: message)
    }

    private func child(_ key: String, _ node: Node) -> YAMLReader {
        YAMLReader(file: file, node: node, path: path.isEmpty ? key : "\(path).\(key)")
    }

    public var isMapping: Bool { node.mapping != nil }
    public var isSequence: Bool { node.sequence != nil }

    /// The keys of a mapping, after checking each is one of `allowed`.
    public func keys(allowed: Set<String>) throws(InputError) -> [String] {
        guard let mapping = node.mapping else { throw error("expected a mapping") }
        var keys: [String] = []
        for (key, value) in mapping {
            guard let name = key.string else { throw error("keys must be strings") }
            guard allowed.contains(name) else {
                throw child(name, value).error("unknown key (expected one of: \(allowed.sorted().joined(separator: ", ")))")
            }
            keys.append(name)
        }
        return keys
    }

    public func optional(_ key: String) throws(InputError) -> YAMLReader? {
        guard let mapping = node.mapping else { throw error("expected a mapping") }
        for (name, value) in mapping where name.string == key {
            if case .scalar(let scalar) = value, scalar.tag == .init(.null) || Self.isPlainNull(scalar) {
                return nil
            }
            return child(key, value)
        }
        return nil
    }

    /// `key:`, `key: ~` and `key: null` (plain, not quoted): YAML's null, read as absent.
    static func isPlainNull(_ scalar: Node.Scalar) -> Bool {
        guard scalar.style == .plain else { return false }
        switch scalar.string {
        case "", "~", "null", "Null", "NULL": return true
        default: return false
        }
    }

    /// A whole number as YAML 1.2's core schema writes it: decimal with an optional sign, or
    /// `0x`/`0o`/`0b` digits, `_` allowed between digits; nil for anything else, and for a number
    /// `Int` cannot hold. Not Yams's `Node.int`: it also reads YAML 1.1's base 60 (`1:30` is 90)
    /// and traps when such a number overflows (found by FuzzRules: `2:2:1222222222222222:2`).
    static func integer(_ text: String) -> Int? {
        var digits = Substring(text)
        var negative = false
        if let sign = digits.first, sign == "-" || sign == "+" {
            negative = sign == "-"
            digits = digits.dropFirst()
        }
        var radix = 10
        for (prefix, base) in [("0x", 16), ("0o", 8), ("0b", 2)] where digits.hasPrefix(prefix) {
            radix = base
            digits = digits.dropFirst(2)
        }
        let plain = digits.filter { $0 != "_" }
        guard !plain.isEmpty, digits.first != "_", digits.last != "_", plain.allSatisfy(\.isASCII),
            let magnitude = UInt(plain, radix: radix)
        else { return nil }
        if negative { return magnitude <= UInt(Int.max) + 1 ? Int(truncatingIfNeeded: 0 &- magnitude) : nil }
        return magnitude <= UInt(Int.max) ? Int(magnitude) : nil
    }

    /// A number: a whole number as `integer` reads it, or a decimal (`1.5`, `-2e3`, `.5`);
    /// nil for anything else (no base 60, no `.inf` or `.nan`).
    static func number(_ text: String) -> Double? {
        if let whole = integer(text) { return Double(whole) }
        guard let first = text.unicodeScalars.first, "+-.0123456789".unicodeScalars.contains(first),
            text.unicodeScalars.allSatisfy({ "+-.0123456789eE_".unicodeScalars.contains($0) }),
            let value = Double(text.filter { $0 != "_" }), value.isFinite
        else { return nil }
        return value
    }

    public func required(_ key: String) throws(InputError) -> YAMLReader {
        guard let value = try optional(key) else { throw error("missing required key `\(key)`") }
        return value
    }

    public func items() throws(InputError) -> [YAMLReader] {
        guard let sequence = node.sequence else { throw error("expected a list") }
        return sequence.enumerated().map { YAMLReader(file: file, node: $1, path: "\(path)[\($0)]") }
    }

    public func entries() throws(InputError) -> [(String, YAMLReader)] {
        guard let mapping = node.mapping else { throw error("expected a mapping") }
        var result: [(String, YAMLReader)] = []
        for (key, value) in mapping {
            guard let name = key.string else { throw error("keys must be strings") }
            result.append((name, child(name, value)))
        }
        return result
    }

    public func string() throws(InputError) -> String {
        guard case .scalar(let scalar) = node else { throw error("expected a text value") }
        return scalar.string
    }

    public func int(in range: ClosedRange<Int> = 0...Int.max) throws(InputError) -> Int {
        guard case .scalar(let scalar) = node, let value = Self.integer(scalar.string) else { throw error("expected a whole number") }
        guard range.contains(value) else { throw error("must be between \(range.lowerBound) and \(range.upperBound)") }
        return value
    }

    public func double(in range: ClosedRange<Double> = -Double.greatestFiniteMagnitude...Double.greatestFiniteMagnitude) throws(InputError) -> Double
    {
        guard case .scalar(let scalar) = node, let value = Self.number(scalar.string) else { throw error("expected a number") }
        guard range.contains(value) else { throw error("must be between \(range.lowerBound) and \(range.upperBound)") }
        return value
    }

    public func bool() throws(InputError) -> Bool {
        guard let value = node.bool else { throw error("expected true or false") }
        return value
    }

    public func duration() throws(InputError) -> Double {
        guard let value = Quantity.duration(try string()) else { throw error("expected a duration such as 250ms, 2s or 1m") }
        return value
    }

    public func rate() throws(InputError) -> Double {
        guard let value = Quantity.rate(try string()), value > 0 else { throw error("expected a rate such as 200/s or 12000/m") }
        return value
    }

    public func size() throws(InputError) -> Int {
        guard let value = Quantity.size(try string()) else { throw error("expected a size such as 512B, 120KiB or 2MiB") }
        return value
    }
}
