import Hummingbird
import NIOCore

/// A storage failure behind an API request is a 500 that says what failed (and is already
/// logged and counted by `StorageHealth`).
extension StorageFailure: HTTPResponseError {
    public var status: HTTPResponse.Status { .internalServerError }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        Response(status: status, headers: [.contentType: "text/plain; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: description)))
    }
}
