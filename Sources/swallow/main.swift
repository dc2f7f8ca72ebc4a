import ArgumentParser
import NIOCore
import NIOPosix

// Run Swift concurrency's jobs on NIO's event loops: a connection's async loop then does not
// hop between a concurrency thread and an I/O thread for every SMTP command (the sink
// benchmark's biggest cost before this). It must happen before anything async runs, so this
// file replaces `@main`.
NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
await Swallow.runAsRoot()

extension Swallow {
    /// `AsyncParsableCommand.main()`, as a function: in top-level code the call to `run()`
    /// would resolve to the synchronous requirement, which only prints help.
    static func runAsRoot() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}
