import ArgumentParser
import LoadGen
import SwallowConfig

/// The fixed formats of DESIGN.md for command-line options (LoadGen's `Quantity` reads them),
/// with argument-parser's validation error naming the option.
enum Units {
    static func duration(_ text: String, option: String) throws -> Double {
        guard let value = Quantity.duration(text) else {
            throw ValidationError("\(option): expected a duration such as 250ms, 2s, 1.5s or 1m, got \(text)")
        }
        return value
    }

    static func bytes(_ text: String, option: String) throws -> Int {
        guard let value = Quantity.size(text), value > 0 else {
            throw ValidationError("\(option): expected a size such as 512B, 120KiB or 2MiB, got \(text)")
        }
        return value
    }
}
