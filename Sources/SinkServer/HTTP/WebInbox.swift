import Foundation
import Hummingbird
import NIOCore

/// The web inbox: `GET /` and `GET /ui/{file}`, plain HTML, CSS and JavaScript shipped as the
/// package resource `Web/` (no build step, no CDN: it works offline). The page speaks only the
/// public HTTP API.
///
/// The files are read once, at the first request. They are looked up beside the executable
/// (`swallow_SinkServer.resources/Web`, where SwiftPM puts them) rather than through
/// `Bundle.module`, which ends the process when the bundle is missing; a binary copied
/// without its resources answers `/` with a page saying so.
enum WebInbox {
    static let files: [String: (type: String, body: ByteBuffer)] = load()

    static func add(to router: Router<BasicRequestContext>) {
        router.get("/") { _, _ -> Response in
            serve("index.html")
        }
        router.get("/ui/:file") { _, context -> Response in
            serve(try context.parameters.require("file"))
        }
    }

    private static func serve(_ name: String) -> Response {
        guard let file = files[name] else {
            if name == "index.html" {
                let page =
                    "<!doctype html><title>Swallow</title><p>The web inbox's files (swallow_SinkServer.resources) are not beside the swallow executable. The HTTP API works: <a href=\"/api/v1/messages\">/api/v1/messages</a>.</p>"
                return Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: page)))
            }
            return Response(status: .notFound)
        }
        return Response(
            status: .ok,
            headers: [.contentType: file.type, .cacheControl: "no-cache", .init("X-Content-Type-Options")!: "nosniff"],
            body: .init(byteBuffer: file.body)
        )
    }

    private static let types = [
        "html": "text/html; charset=utf-8", "css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8",
        "svg": "image/svg+xml",
    ]

    private static func load() -> [String: (type: String, body: ByteBuffer)] {
        guard let directory = directory() else { return [:] }
        var files: [String: (type: String, body: ByteBuffer)] = [:]
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [] {
            guard let type = types[(name as NSString).pathExtension],
                let data = FileManager.default.contents(atPath: directory.appendingPathComponent(name).path)
            else { continue }
            files[name] = (type, ByteBuffer(bytes: data))
        }
        return files
    }

    private static func directory() -> URL? {
        let bundle = "swallow_SinkServer.resources"
        var candidates = [Bundle.main.bundleURL.appendingPathComponent(bundle)]
        if let executable = Bundle.main.executableURL {
            candidates.append(executable.resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent(bundle))
        }
        // SwiftPM's own bundles (Linux: a directory; macOS: a .bundle with Contents/Resources).
        for candidate in candidates {
            for web in [candidate.appendingPathComponent("Web"), candidate.appendingPathComponent("Contents/Resources/Web")]
            where FileManager.default.fileExists(atPath: web.appendingPathComponent("index.html").path) {
                return web
            }
        }
        let bundleName = bundle.replacingOccurrences(of: ".resources", with: ".bundle")
        for candidate in candidates.map({ $0.deletingLastPathComponent().appendingPathComponent(bundleName) }) {
            let web = candidate.appendingPathComponent("Contents/Resources/Web")
            if FileManager.default.fileExists(atPath: web.appendingPathComponent("index.html").path) { return web }
        }
        return nil
    }
}
