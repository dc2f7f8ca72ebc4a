import ArgumentParser
import Assertions
import NIOCore

/// `swallow health`: exits 0 when a sink's `/readyz` answers `200`, 1 otherwise: a container
/// `HEALTHCHECK` that needs no curl in the image.
struct Health: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Exit 0 when the sink's /readyz answers 200 (for a container HEALTHCHECK)."
    )

    @Option(help: "The sink's HTTP address.")
    var api = "http://127.0.0.1:8025"

    func run() async throws {
        do {
            let (status, _) = try await SinkHTTP.get(SinkHTTP.url(api, "/readyz"), timeout: .seconds(5), maxBytes: 1024)
            guard status == 200 else {
                print("not ready: HTTP \(status)")
                throw ExitCode(1)
            }
            print("ready")
        } catch let exit as ExitCode {
            throw exit
        } catch {
            print("not ready: \(error)")
            throw ExitCode(1)
        }
    }
}
