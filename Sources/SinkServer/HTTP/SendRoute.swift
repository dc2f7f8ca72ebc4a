import Foundation
import Hummingbird
import SMTPProtocol

/// `POST /api/v1/send`, Mailpit's send API: the JSON becomes a MIME message that is submitted
/// through an SMTP session of the sink's own (`LocalSubmission`), so it is captured, faulted,
/// counted and announced exactly as mail received over SMTP.
///
/// Answers: `200 {"ID"}` when the sink accepted the message (with `Refused` listing recipients
/// refused while others were accepted); `400 {"Error"}` naming the field for a bad body; when
/// the session refused the message, `503` for a 4xx reply and `422` for a 5xx reply, with the
/// reply in `{"Error", "Code", "Enhanced", "Phase"}`; `502` when it ended without a reply (a
/// fault's disconnect). Errors are JSON, as Mailpit's send API answers them.
enum SendRoute {
    static func add(to router: Router<BasicRequestContext>, sink: Sink) {
        let limits = sink.configuration.limits
        // Attachments arrive base64-encoded: a third larger than the message they make.
        let maxBody = min(limits.maxMessageBytes / 3 * 4 + (1 << 20), 256 << 20)
        router.post("/api/v1/send") { request, _ -> Response in
            var request = request
            let body = try await request.collectBody(upTo: maxBody)
            let send: SendRequest
            do {
                send = try SendRequest(json: Data(body.readableBytesView))
            } catch {
                return errorResponse(.badRequest, ["Error": "\(error)"])
            }
            let message = send.message(hostname: sink.configuration.hostname)
            let outcome = try await sink.submitLocally(sender: send.from.email, recipients: send.envelopeRecipients, message: message)
            if let id = outcome.storedID {
                var answer: [String: AnyEncodable] = ["ID": AnyEncodable(id)]
                let refused = zip(send.envelopeRecipients, outcome.recipients).filter { $0.1.code.rawValue / 100 != 2 }
                if !refused.isEmpty {
                    answer["Refused"] = AnyEncodable(refused.map { ["Recipient": $0.0, "Reply": $0.1.description] })
                }
                return try SinkAPI.json(answer, sortedKeys: true)
            }
            guard let (reply, phase) = outcome.decisive else {
                return errorResponse(.badGateway, ["Error": "the SMTP session ended without a reply (a fault closed the connection)"])
            }
            var error: [String: AnyEncodable] = [
                "Error": AnyEncodable(
                    "\(reply.code.rawValue)" + (reply.enhanced.map { " \($0)" } ?? "") + " " + reply.lines.joined(separator: " ")
                ),
                "Code": AnyEncodable(reply.code.rawValue),
                "Phase": AnyEncodable(phase),
            ]
            if let enhanced = reply.enhanced { error["Enhanced"] = AnyEncodable("\(enhanced)") }
            return errorResponse(reply.code.rawValue >= 500 ? .unprocessableContent : .serviceUnavailable, error)
        }
    }

    /// Errors are JSON, as Mailpit's send API answers them (`SinkAPI.json` with the status).
    static func errorResponse(_ status: HTTPResponse.Status, _ body: [String: AnyEncodable]) -> Response {
        (try? SinkAPI.json(body, sortedKeys: true, status: status)) ?? Response(status: status)
    }

    static func errorResponse(_ status: HTTPResponse.Status, _ body: [String: String]) -> Response {
        errorResponse(status, body.mapValues { AnyEncodable($0) })
    }
}
