import Foundation
import HTTPTypes
import Hummingbird

/// The mailbox a request is narrowed to (a mailbox token's), for the routes that look messages
/// up by id; nil for an admin or an open sandbox.
enum APIScope {
    @TaskLocal static var mailbox: String?

    /// 404 unless the message is filed under the request's mailbox.
    static func check(_ listing: MessageStore.Listing) throws {
        if let mailbox, !listing.mailboxes.contains(mailbox) { throw HTTPError(.notFound, message: "Message not found") }
    }

    /// The ids among `ids` the request may touch.
    static func filter(_ ids: [String], store: MessageStore) -> [String] {
        guard let mailbox else { return ids }
        return ids.filter { store.listing(id: $0)?.mailboxes.contains(mailbox) ?? false }
    }
}

/// Who may use the HTTP API.
///
/// - Admin credentials: `--api-token` (`Authorization: Bearer TOKEN`) and `--api-auth FILE`
///   (HTTP Basic with a `user:password` of the file). A browser can send a token too, as the
///   password of Basic with any user name, so the web inbox works with tokens alone.
/// - A mailbox's token (Bearer, or Basic's password) narrows every route to that mailbox: the
///   routes that take `mailbox=` get it (naming another mailbox is `404`), the routes by message id
///   answer `404` for another mailbox's message, and routes that cannot be narrowed (tags,
///   send, MailHog v1, chaos, info, metrics, the mailbox list) answer `403`.
/// - Without admin credentials configured, a request without `Authorization` is an admin (a
///   loopback sandbox, as before); with them it gets `401` and `WWW-Authenticate`. A header
///   that does not parse, or a token nobody has (a deleted mailbox's), is `401` either way.
/// - `/healthz`, `/livez` and `/readyz` need nothing.
struct APIAccess: RouterMiddleware {
    typealias Context = BasicRequestContext

    let adminTokens: [String]
    let credentials: [String: String]?
    let registry: MailboxRegistry

    var required: Bool { !adminTokens.isEmpty || credentials != nil }

    enum Principal: Equatable {
        case admin
        case mailbox(String)
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        if ["/healthz", "/livez", "/readyz"].contains(path) { return try await next(request, context) }
        let principal: Principal
        switch authenticate(request.headers[.authorization]) {
        case .success(let found?): principal = found
        case .success(nil):
            guard !required else { return unauthorized("credentials required") }
            principal = .admin
        case .failure(let failure): return unauthorized(failure.reason)
        }
        guard case .mailbox(let name) = principal else { return try await next(request, context) }
        guard Self.allowsMailboxToken(method: request.method, path: path) else {
            return Self.error(.forbidden, "a mailbox token cannot use \(request.method.rawValue) \(path)")
        }
        if let asked = request.uri.queryParameters.get("mailbox"), asked != name {
            return Self.error(.notFound, "unknown mailbox \(asked)")
        }
        return try await APIScope.$mailbox.withValue(name) {
            try await next(Self.narrowed(request, to: name), context)
        }
    }

    struct Failure: Error { var reason: String }

    /// nil: no credential given.
    func authenticate(_ header: String?) -> Result<Principal?, Failure> {
        guard let header else { return .success(nil) }
        let parts = header.split(separator: " ", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
        guard parts.count == 2, !parts[1].isEmpty else { return .failure(Failure(reason: "malformed Authorization header")) }
        switch parts[0].lowercased() {
        case "bearer":
            return token(parts[1]).map { .success($0) } ?? .failure(Failure(reason: "unknown token"))
        case "basic":
            guard let data = Data(base64Encoded: parts[1]), let text = String(data: data, encoding: .utf8),
                let colon = text.firstIndex(of: ":")
            else { return .failure(Failure(reason: "malformed Basic credentials")) }
            let user = String(text[..<colon]), password = String(text[text.index(after: colon)...])
            if let credentials, let expected = credentials[user], constantTimeEqual(expected, password) { return .success(.admin) }
            return token(password).map { .success($0) } ?? .failure(Failure(reason: "wrong user or password"))
        default:
            return .failure(Failure(reason: "unsupported Authorization scheme"))
        }
    }

    private func token(_ token: String) -> Principal? {
        if adminTokens.contains(where: { constantTimeEqual($0, token) }) { return .admin }
        return registry.name(forToken: token).map { .mailbox($0) }
    }

    private func unauthorized(_ reason: String) -> Response {
        var response = Self.error(.unauthorized, reason)
        response.headers.append(HTTPField(name: .wwwAuthenticate, value: #"Basic realm="Swallow", charset="UTF-8""#))
        response.headers.append(HTTPField(name: .wwwAuthenticate, value: #"Bearer realm="Swallow""#))
        return response
    }

    static func error(_ status: HTTPResponse.Status, _ message: String) -> Response {
        let body = (try? JSONEncoder().encode(["error": message])) ?? Data()
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    /// The routes a mailbox token may use: those narrowed to its mailbox.
    static func allowsMailboxToken(method: HTTPRequest.Method, path: String) -> Bool {
        switch path {
        case "/", "/api/v1/messages", "/api/v1/search", "/api/v1/wait", "/api/v1/events", "/api/v1/stats",
            "/api/v1/faults", "/api/v1/faults/next", "/api/v2/messages", "/api/v2/search", "/api/v1/deliveries",
            "/api/v1/stats/top", "/api/v1/stats/timeline":
            return true
        default:
            if path.hasPrefix("/ui/") || path.hasPrefix("/view/") { return method == .get }
            if path.hasPrefix("/api/v1/message/") || path.hasPrefix("/api/v1/deliveries/") { return method == .get }
            if path.hasPrefix("/api/v1/mailboxes/") { return method == .get || method == .delete }
            return false
        }
    }

    /// The request with `mailbox=NAME` in its query, replacing any `mailbox` it had.
    static func narrowed(_ request: Request, to name: String) -> Request {
        var items = (request.uri.query ?? "").split(separator: "&").filter { pair in
            !(pair == "mailbox" || pair.hasPrefix("mailbox="))
        }.map(String.init)
        items.append("mailbox=\(name)")
        var head = request.head
        head.path = request.uri.path + "?" + items.joined(separator: "&")
        return Request(head: head, body: request.body)
    }
}
