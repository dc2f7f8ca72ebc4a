import Crypto
import Foundation

/// Who may log in with AUTH: anyone (a sandbox's default), or the users of a credentials file.
public enum AuthPolicy: Hashable, Sendable {
    /// Every user and password is accepted, for every mechanism.
    case any
    /// Only these `user: password` pairs.
    case credentials([String: String])

    /// Reads a file of `user:password` lines; blank lines and lines starting with `#` are skipped.
    public static func load(file path: String) throws -> AuthPolicy {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigurationError(message: "cannot read credentials file \(path): \(error.localizedDescription)")
        }
        var users: [String: String] = [:]
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            guard let colon = trimmed.firstIndex(of: ":"), colon != trimmed.startIndex else {
                throw ConfigurationError(message: "\(path):\(number + 1): expected user:password")
            }
            users[String(trimmed[..<colon])] = String(trimmed[trimmed.index(after: colon)...])
        }
        return .credentials(users)
    }

    /// Checks a user and password (PLAIN, LOGIN).
    func verify(user: String, password: String) -> Bool {
        switch self {
        case .any: true
        case .credentials(let users): users[user].map { constantTimeEqual($0, password) } ?? false
        }
    }

    /// Checks a CRAM-MD5 response: `digest` is the hex HMAC-MD5 of `challenge` keyed by the
    /// user's password (RFC 2195 §2).
    func verify(user: String, challenge: String, digest: String) -> Bool {
        switch self {
        case .any:
            return true
        case .credentials(let users):
            guard let password = users[user] else { return false }
            let mac = HMAC<Insecure.MD5>.authenticationCode(for: Data(challenge.utf8), using: SymmetricKey(data: Data(password.utf8)))
            let expected = mac.map { String(format: "%02x", $0) }.joined()
            return constantTimeEqual(expected, digest.lowercased())
        }
    }
}

func constantTimeEqual(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8)
    let y = Array(b.utf8)
    guard x.count == y.count else { return false }
    var difference: UInt8 = 0
    for index in x.indices { difference |= x[index] ^ y[index] }
    return difference == 0
}
