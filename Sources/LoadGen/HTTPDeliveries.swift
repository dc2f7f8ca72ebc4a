import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A remote sink's captures, read from its event stream (`GET /api/v1/events`, server-sent
/// events whose `data` is each message's capture metadata). With `bodies`, each message's
/// bytes are fetched too (`/api/v1/message/{ID}/raw`), for `expect.content`.
public struct HTTPDeliveries: DeliverySource {
    public var baseURL: URL
    public var bodies: Bool

    public init(baseURL: URL, bodies: Bool = false) {
        self.baseURL = baseURL
        self.bodies = bodies
    }

    /// Returns once the sink has answered the subscription (or it failed: then the stream is
    /// empty and every accepted message will count as lost).
    public func deliveries() async -> AsyncStream<Delivery> {
        let (stream, continuation) = AsyncStream<Delivery>.makeStream(bufferingPolicy: .unbounded)
        let reader = EventReader(baseURL: baseURL, bodies: bodies, continuation: continuation)
        continuation.onTermination = { _ in reader.cancel() }
        await withCheckedContinuation { (connected: CheckedContinuation<Void, Never>) in
            reader.start(onConnected: { connected.resume() })
        }
        return stream
    }

    /// Reads the stream with a delegate (chunks as they come), cut into SSE events.
    final class EventReader: NSObject, URLSessionDataDelegate, @unchecked Sendable {
        let baseURL: URL
        let bodies: Bool
        let continuation: AsyncStream<Delivery>.Continuation
        private var buffer = Data()
        private var session: URLSession?
        private var task: URLSessionDataTask?
        private var onConnected: (() -> Void)?
        private let lock = NSLock()

        init(baseURL: URL, bodies: Bool, continuation: AsyncStream<Delivery>.Continuation) {
            self.baseURL = baseURL
            self.bodies = bodies
            self.continuation = continuation
        }

        /// `onConnected` runs once: at the first bytes of the stream, or when it fails.
        func start(onConnected: @escaping () -> Void) {
            lock.withLock { self.onConnected = onConnected }
            let configuration = URLSessionConfiguration.default
            configuration.timeoutIntervalForRequest = 24 * 3600
            let session = URLSession(configuration: configuration, delegate: self, delegateQueue: nil)
            var request = URLRequest(url: baseURL.appendingPathComponent("api/v1/events"))
            request.setValue("text/event-stream", forHTTPHeaderField: "Accept")
            let task = session.dataTask(with: request)
            lock.withLock {
                self.session = session
                self.task = task
            }
            task.resume()
        }

        func cancel() {
            lock.withLock {
                task?.cancel()
                session?.invalidateAndCancel()
            }
        }

        func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
            let (events, connected): ([Data], (() -> Void)?) = lock.withLock {
                buffer.append(data)
                defer { onConnected = nil }
                var events: [Data] = []
                while let range = buffer.range(of: Data("\n\n".utf8)) {
                    events.append(buffer.subdata(in: buffer.startIndex..<range.lowerBound))
                    buffer.removeSubrange(buffer.startIndex..<range.upperBound)
                }
                return (events, onConnected)
            }
            connected?()
            for event in events { handle(event) }
        }

        func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: (any Error)?) {
            let connected: (() -> Void)? = lock.withLock {
                defer { onConnected = nil }
                return onConnected
            }
            connected?()
            continuation.finish()
        }

        private func handle(_ event: Data) {
            let lines = String(decoding: event, as: UTF8.self).split(separator: "\n")
            // Only stored messages are deliveries: a sink's `drop` and `fault` events are not.
            if let kind = lines.first(where: { $0.hasPrefix("event: ") }), kind != "event: message" { return }
            for line in lines where line.hasPrefix("data: ") {
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.dropFirst(6).utf8)) as? [String: Any],
                      let trace = object["traceID"] as? String,
                      let id = object["id"] as? String,
                      let timestamps = object["timestamps"] as? [String: Any],
                      let end = (timestamps["dataEndNanos"] as? NSNumber)?.int64Value
                else { continue }
                let capturedAt = Date(timeIntervalSince1970: Double(end) / 1e9)
                guard bodies else {
                    continuation.yield(Delivery(traceID: trace, capturedAt: capturedAt))
                    continue
                }
                let url = baseURL.appendingPathComponent("api/v1/message/\(id)/raw")
                let continuation = self.continuation
                Task {
                    let raw = try? await URLSession.shared.data(from: url).0
                    continuation.yield(Delivery(traceID: trace, capturedAt: capturedAt, raw: raw.map(Array.init)))
                }
            }
        }
    }
}
