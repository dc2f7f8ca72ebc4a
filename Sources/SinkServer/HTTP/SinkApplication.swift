import Hummingbird
import Logging
import NIOCore

extension Sink {
    /// The whole sink as one Hummingbird application: the HTTP API on `http`, the SMTP
    /// listeners as a service beside it. `swallow serve` and tests build it the same way;
    /// `onReady` gets the `ready smtp=... http=...` line once both listen.
    public func application(
        http: ListenAddress, logger: Logger, onReady: @escaping @Sendable (String) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        let readyLine = self.readyLine
        return Application(
            router: SinkAPI.router(for: self),
            configuration: .init(address: .hostname(http.host, port: http.port), serverName: "Swallow"),
            services: [self],
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? http.port
                let host = channel.localAddress?.ipAddress ?? http.host
                let address = ListenAddress(host: host, port: port)
                await onReady(readyLine + " http=\(address)")
            },
            logger: logger
        )
    }
}
