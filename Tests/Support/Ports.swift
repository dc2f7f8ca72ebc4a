import NIOCore
import NIOPosix

/// A loopback port that was free a moment ago (bound, read, closed), for a peer server that
/// must be told its port before it starts.
public func freePort() throws -> Int {
    let channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .bind(host: "127.0.0.1", port: 0).wait()
    let port = channel.localAddress!.port!
    try channel.close().wait()
    return port
}

/// Polls a connect until the server listens (at most 5 s): a readiness check, not a sleep.
public func waitUntilListening(port: Int) async throws {
    for _ in 0..<500 {
        if let channel = try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port).get()
        {
            try? await channel.close().get()
            return
        }
        try await Task.sleep(for: .milliseconds(10))
    }
    throw CancellationError()
}
