import Assertions
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// A remote sink's captures, read from its event stream (`GET /api/v1/events`, server-sent
/// events whose `data` is each message's capture metadata). With `bodies`, each message's
/// bytes are fetched too (`/api/v1/message/{ID}/raw`), for `expect.content`. AsyncHTTPClient,
/// not URLSession: the binary carries no FoundationNetworking (libcurl).
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
        let (connected, connectedContinuation) = AsyncStream<Void>.makeStream()
        let base = baseURL.absoluteString
        let bodies = self.bodies
        let reader = Task {
            defer {
                connectedContinuation.finish()
                continuation.finish()
            }
            var request = HTTPClientRequest(url: SinkHTTP.url(base, "/api/v1/events"))
            request.headers.add(name: "Accept", value: "text/event-stream")
            guard let response = try? await SinkHTTP.client.execute(request, timeout: .hours(24 * 365)) else { return }
            connectedContinuation.finish()
            var events = EventSplitter()
            do {
                for try await chunk in response.body {
                    for event in events.append(chunk) {
                        Self.handle(event, base: base, bodies: bodies, continuation: continuation)
                    }
                }
            } catch {
                return
            }
        }
        continuation.onTermination = { _ in reader.cancel() }
        for await _ in connected {}
        return stream
    }

    /// Cuts a server-sent event stream into events (separated by a blank line).
    struct EventSplitter {
        private var buffer: [UInt8] = []

        mutating func append(_ chunk: ByteBuffer) -> [String] {
            buffer.append(contentsOf: chunk.readableBytesView)
            var events: [String] = []
            var start = 0
            var index = 0
            while index + 1 < buffer.count {
                if buffer[index] == UInt8(ascii: "\n"), buffer[index + 1] == UInt8(ascii: "\n") {
                    events.append(String(decoding: buffer[start..<index], as: UTF8.self))
                    start = index + 2
                    index = start
                } else {
                    index += 1
                }
            }
            buffer.removeFirst(start)
            return events
        }
    }

    private static func handle(_ event: String, base: String, bodies: Bool, continuation: AsyncStream<Delivery>.Continuation) {
        let lines = event.split(separator: "\n")
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
            // A proxy's hop (`swallow serve --upstream`): its upstream's latency.
            let relay = (object["relay"] as? [[String: Any]])?.first { $0["kind"] as? String == "proxy" }
            let relayLatency = (relay?["latencyMs"] as? NSNumber)?.doubleValue
            guard bodies else {
                continuation.yield(Delivery(traceID: trace, capturedAt: capturedAt, relayLatencyMs: relayLatency))
                continue
            }
            Task {
                let raw = try? await SinkHTTP.get(SinkHTTP.url(base, "/api/v1/message/\(id)/raw"))
                continuation.yield(
                    Delivery(
                        traceID: trace, capturedAt: capturedAt, raw: raw.flatMap { $0.status == 200 ? $0.body : nil }, relayLatencyMs: relayLatency))
            }
        }
    }
}
