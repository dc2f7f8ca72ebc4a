import Foundation
import NIOSSL
import Testing

@testable import SinkServer

@Suite("The sink's TLS, made when first needed")
struct SinkTLSTests {
    @Test("a self-signed certificate is made on first use, once, and shared by every caller")
    func selfSignedIsLazy() throws {
        let tls = try SinkTLS(.selfSigned, hostname: "sink.test")
        #expect(!tls.isMade, "nothing is made before a client asks for TLS")
        let first = try tls.context()
        #expect(tls.isMade)
        #expect(try tls.context() === first, "one context for every connection")
        let configuration = try tls.configuration()
        #expect(configuration.certificateChain.count == 1)
    }

    @Test("PEM files are read at start: a missing file is an error of the command, not of a session")
    func filesAreEager() throws {
        let missing = NSTemporaryDirectory() + "swallow-missing-\(UUID().uuidString).pem"
        #expect(throws: ConfigurationError.self) {
            _ = try SinkTLS(.files(certificate: missing, key: missing), hostname: "sink.test")
        }
    }
}
