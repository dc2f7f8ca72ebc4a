import Foundation
import SMTPProtocol

// AUTH PLAIN, LOGIN and CRAM-MD5 (RFC 4954, RFC 4616, RFC 2195): the session's exchange.
extension SMTPSession {
    mutating func startAuth(_ mechanism: String, _ initial: String?, resume: AuthResume) -> Action {
        guard helo != nil, esmtp else { return badSequence("send EHLO before AUTH") }
        guard authUser == nil else { return badSequence("already authenticated") }
        guard configuration.auth != nil else { return .reply(.authNotAvailable) }
        guard authOffered else { return .reply(.encryptionRequired) }
        switch mechanism {
        case "PLAIN":
            guard let initial else {
                state = .auth(.plain, resume: resume)
                return .reply(.authChallenge(""))
            }
            return finishPlain(initial, resume: resume)
        case "LOGIN":
            guard let initial else {
                state = .auth(.loginUser, resume: resume)
                return .reply(.authChallenge("VXNlcm5hbWU6"))
            }
            return loginUser(initial, resume: resume)
        case "CRAM-MD5":
            guard initial == nil else { return error(.cramMD5InitialResponse) }
            let challenge = configuration.makeChallenge()
            state = .auth(.cramMD5(challenge: challenge), resume: resume)
            return .reply(.authChallenge(Data(challenge.utf8).base64EncodedString()))
        default:
            return error(.unrecognizedMechanism(mechanism))
        }
    }

    /// A client line during an AUTH exchange.
    mutating func authResponse(_ line: String) -> Action {
        guard case .auth(let step, let resume) = state else { return .none }
        if line == "*" {
            state = resume == .connected ? .connected : .ready
            return .reply(.authCancelled)
        }
        switch step {
        case .plain:
            return finishPlain(line, resume: resume)
        case .loginUser:
            return loginUser(line, resume: resume)
        case .loginPassword(let user):
            guard let password = Self.decodeBase64(line) else { return authSyntax(resume) }
            return authResult(user: user, ok: configuration.auth?.verify(user: user, password: password) ?? false, resume: resume)
        case .cramMD5(let challenge):
            guard let response = Self.decodeBase64(line), let space = response.lastIndex(of: " ") else { return authSyntax(resume) }
            let user = String(response[..<space])
            let digest = String(response[response.index(after: space)...])
            let ok = configuration.auth?.verify(user: user, challenge: challenge, digest: digest) ?? false
            return authResult(user: user, ok: ok, resume: resume)
        }
    }

    private mutating func finishPlain(_ base64: String, resume: AuthResume) -> Action {
        // authzid NUL authcid NUL passwd (RFC 4616 §2); "=" is an empty initial response.
        guard base64 != "=", let decoded = Self.decodeBase64Bytes(base64) else { return authSyntax(resume) }
        let parts = decoded.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3 else { return authSyntax(resume) }
        let user = String(decoding: parts[1], as: UTF8.self)
        let password = String(decoding: parts[2], as: UTF8.self)
        return authResult(user: user, ok: configuration.auth?.verify(user: user, password: password) ?? false, resume: resume)
    }

    private mutating func loginUser(_ base64: String, resume: AuthResume) -> Action {
        guard let user = Self.decodeBase64(base64) else { return authSyntax(resume) }
        state = .auth(.loginPassword(user: user), resume: resume)
        return .reply(.authChallenge("UGFzc3dvcmQ6"))
    }

    private mutating func authResult(user: String, ok: Bool, resume: AuthResume) -> Action {
        state = resume == .connected ? .connected : .ready
        guard ok else { return error(.authInvalid) }
        authUser = user
        return .reply(.authSucceeded)
    }

    private mutating func authSyntax(_ resume: AuthResume) -> Action {
        state = resume == .connected ? .connected : .ready
        return error(.authUndecodable)
    }

    private static func decodeBase64Bytes(_ text: String) -> [UInt8]? {
        Data(base64Encoded: text).map { [UInt8]($0) }
    }

    private static func decodeBase64(_ text: String) -> String? {
        decodeBase64Bytes(text).flatMap { String(validating: $0, as: UTF8.self) }
    }
}
