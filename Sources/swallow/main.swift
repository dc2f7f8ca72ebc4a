import ArgumentParser
import CSwallowSystem
import Foundation
import NIOCore
import NIOPosix

// This file replaces `@main`: the event loop group must be sized, and installed as Swift
// concurrency's executor, before anything async runs.
// sendmail's command line is not argument-parser's (`-oi`, `-ffrom@x`): it is parsed by hand,
// whether the binary runs as `swallow sendmail …` or under the name `sendmail`.
let invokedAs = CommandLine.arguments.first.map { String($0.split(separator: "/").last ?? "") } ?? ""
if invokedAs == "sendmail" || CommandLine.arguments.dropFirst().first == "sendmail" {
    NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
    let arguments = Array(CommandLine.arguments.dropFirst(invokedAs == "sendmail" ? 1 : 2))
    exit(await Sendmail.execute(arguments))
}

do {
    var command = try Swallow.parseAsRoot()
    if let serve = command as? Serve {
        let loops = serve.threads ?? Serve.defaultThreads
        NIOSingletons.groupLoopCountSuggestion = loops
        // glibc gives each allocating thread an arena of its own, up to 8 per core; a sink
        // that takes 200 KiB messages for hours fragments all of them and its RSS kept rising
        // (968 MiB after an hour's soak). A few arenas, capped before any thread starts, keep it
        // flat (Benchmarks/soak.py; MALLOC_ARENA_MAX in the environment still wins).
        swallow_limit_malloc_arenas(Int32(max(2, loops)))
    }
    // Run Swift concurrency's jobs on NIO's event loops, so async code around the sink does not
    // hop between a concurrency thread and an I/O thread.
    NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
    if var asyncCommand = command as? any AsyncParsableCommand {
        try await runAsync(&asyncCommand)
    } else {
        try command.run()
    }
} catch {
    Swallow.exit(withError: error)
}

/// In top-level code a call to `run()` through the existential resolves to the synchronous
/// requirement (which only prints help); inside a function it resolves to the async one.
func runAsync(_ command: inout any AsyncParsableCommand) async throws {
    try await command.run()
}
