import Crypto
import Foundation
import NIOSSL
import SwiftASN1
import Synchronization
import X509

/// Where the sink's TLS certificate comes from.
public enum TLSSource: Hashable, Sendable {
    /// A fresh self-signed certificate for the sink's hostname (ECDSA P-256), made when first
    /// needed (see `SinkTLS`).
    case selfSigned
    /// PEM files.
    case files(certificate: String, key: String)
}

/// The sink's certificate, key and server context, made once, when first needed.
///
/// A self-signed certificate costs a key generation and a signature, and the first TLS context
/// brings in BoringSSL's code: measured, 4.7 MiB of the idle sink's resident memory
/// (42.4 MiB with it made at start, 37.7 MiB without). A sink that no client asks for STARTTLS
/// never pays it; the first STARTTLS makes it (a few milliseconds, once). PEM files are read
/// at start all the same, so a missing or bad file is an error of `swallow serve`, not of a
/// client's session; `--smtps` and `--http-tls` need the context at start and make it there.
final class SinkTLS: Sendable {
    private let source: TLSSource
    private let hostname: String
    private let made = Mutex<(configuration: TLSConfiguration, context: NIOSSLContext)?>(nil)

    init(_ source: TLSSource, hostname: String) throws {
        self.source = source
        self.hostname = hostname
        if case .files = source { _ = try context() }
    }

    /// Whether the certificate and context exist yet.
    var isMade: Bool { made.withLock { $0 != nil } }

    /// The server configuration (certificate chain and key), shared by SMTP and `--http-tls`.
    func configuration() throws -> TLSConfiguration {
        try make().configuration
    }

    /// The server context STARTTLS and `--smtps` wrap connections with.
    func context() throws -> NIOSSLContext {
        try make().context
    }

    private func make() throws -> (configuration: TLSConfiguration, context: NIOSSLContext) {
        try made.withLock { made in
            if let made { return made }
            let configuration = try TLSSetup.makeConfiguration(source, hostname: hostname)
            let result = (configuration: configuration, context: try NIOSSLContext(configuration: configuration))
            made = result
            return result
        }
    }
}

enum TLSSetup {
    static func makeContext(_ source: TLSSource, hostname: String) throws -> NIOSSLContext {
        try NIOSSLContext(configuration: makeConfiguration(source, hostname: hostname))
    }

    /// The server configuration for `source` (a self-signed certificate is made here).
    static func makeConfiguration(_ source: TLSSource, hostname: String) throws -> TLSConfiguration {
        let configuration: TLSConfiguration
        switch source {
        case .selfSigned:
            let (certificate, key) = try selfSigned(hostname: hostname)
            configuration = .makeServerConfiguration(certificateChain: [.certificate(certificate)], privateKey: .privateKey(key))
        case .files(let certificatePath, let keyPath):
            do {
                let chain = try NIOSSLCertificate.fromPEMFile(certificatePath).map { NIOSSLCertificateSource.certificate($0) }
                let key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
                configuration = .makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
            } catch {
                throw ConfigurationError(message: "cannot load TLS certificate \(certificatePath) / key \(keyPath): \(error)")
            }
        }
        return configuration
    }

    /// A self-signed certificate valid for a year, with `hostname`, `localhost` and the
    /// loopback addresses as subject alternative names.
    static func selfSigned(hostname: String) throws -> (NIOSSLCertificate, NIOSSLPrivateKey) {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName {
            CommonName(hostname)
            OrganizationName("Swallow SMTP sink")
        }
        let now = Date()
        var names: [GeneralName] = [.dnsName(hostname)]
        if hostname != "localhost" { names.append(.dnsName("localhost")) }
        names.append(.ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1])))
        names.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice([UInt8](repeating: 0, count: 15) + [1]))))
        let certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-3600),
            notValidAfter: now.addingTimeInterval(365 * 24 * 3600),
            issuer: name,
            subject: name,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                KeyUsage(digitalSignature: true)
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames(names)
            },
            issuerPrivateKey: .init(key)
        )
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        let nioCertificate = try NIOSSLCertificate(bytes: serializer.serializedBytes, format: .der)
        let nioKey = try NIOSSLPrivateKey(bytes: Array(key.derRepresentation), format: .der)
        return (nioCertificate, nioKey)
    }
}
