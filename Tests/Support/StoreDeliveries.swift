import Foundation
import LoadGen
import MailMessage
import NIOCore
import SinkServer

/// An in-process sink's captures as the load generator's deliveries (what a relay handed on).
/// `lossy`: the message of seq 3 is lost and seq 5's is delivered twice on the way.
public struct StoreDeliveries: DeliverySource {
    let store: MessageStore
    var lossy = true
    var bodies = false

    public init(store: MessageStore, lossy: Bool = true, bodies: Bool = false) {
        self.store = store
        self.lossy = lossy
        self.bodies = bodies
    }

    public func deliveries() async -> AsyncStream<Delivery> {
        let events = store.events.subscribe()
        let (lossy, bodies, store) = (lossy, bodies, store)
        return AsyncStream { continuation in
            let task = Task {
                for await message in events {
                    guard let trace = message.traceID, !(lossy && trace.hasSuffix("/3")) else { continue }
                    let raw = bodies ? (try? await store.receivedBytes(id: message.id)).flatMap { $0.map { Array($0.readableBytesView) } } : nil
                    let delivery = Delivery(
                        traceID: trace, capturedAt: Date(timeIntervalSince1970: Double(message.timestamps.dataEndNanos) / 1e9), raw: raw)
                    continuation.yield(delivery)
                    if lossy && trace.hasSuffix("/5") { continuation.yield(delivery) }
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}
