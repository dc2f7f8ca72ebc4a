import Hummingbird
import HummingbirdTLS
import Logging
import NIOCore

extension Sink {
    /// The whole sink as one Hummingbird application: the HTTP API on `http`, the SMTP
    /// listeners as a service beside it. `swallow serve` and tests build it the same way;
    /// `onReady` gets the `ready smtp=... http=...` line once both listen (`https=` with
    /// `--http-tls`, served with the SMTP listeners' certificate).
    public func application(
        http: ListenAddress, logger: Logger, onReady: @escaping @Sendable (String) async -> Void = { _ in }
    ) throws -> some ApplicationProtocol {
        let readyLine = self.readyLine
        let tls = configuration.httpTLS ? try self.tls?.configuration() : nil
        return Application(
            router: SinkAPI.router(for: self),
            server: try tls.map { try .tls(.http1(), tlsConfiguration: $0) } ?? .http1(),
            configuration: .init(address: .hostname(http.host, port: http.port), serverName: "Swallow"),
            services: [self],
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? http.port
                let host = channel.localAddress?.ipAddress ?? http.host
                let address = ListenAddress(host: host, port: port)
                await onReady(readyLine + (tls == nil ? " http=" : " https=") + "\(address)")
            },
            logger: logger
        )
    }
}
