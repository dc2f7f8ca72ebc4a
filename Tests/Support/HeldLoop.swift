import Dispatch
import NIOCore

/// Runs `body` on the calling thread while `loop` is held inside a task of its own, so that
/// whatever `body` hands the loop (work, timers, cancellations) waits in its inbox and is taken
/// at once when the hold ends: on a busy machine a deadline could otherwise pass in between.
/// The hold is announced with a continuation, not a promise of `loop`: awaiting one of those
/// registers its callback through the held loop.
public func holding<T>(_ loop: any EventLoop, while body: () throws -> T) async rethrows -> T {
    let gate = DispatchSemaphore(value: 0)
    await withCheckedContinuation { (held: CheckedContinuation<Void, Never>) in
        loop.execute {
            held.resume()
            gate.wait()
        }
    }
    defer { gate.signal() }
    return try body()
}
