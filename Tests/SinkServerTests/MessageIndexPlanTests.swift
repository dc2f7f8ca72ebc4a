import Foundation
import GRDB
import Logging
import Testing

@testable import SinkServer

/// The search index's query plans for what every list answer asks.
@Suite("Message index plans")
struct MessageIndexPlanTests {
    @Test("the tags in use come from an index of tagged messages, not a scan of every message")
    func tagsFromIndex() throws {
        let directory = try BodySpoolTests.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let index = try MessageIndex(path: directory + "/index.sqlite", health: StorageHealth(logger: Logger(label: "test")))
        let plan = try index.database.read { db in
            try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN SELECT DISTINCT m.tags FROM message m WHERE m.tags != '[]' AND 1")
                .map { $0["detail"] as String }
        }
        #expect(plan.joined().contains("message_tagged"), "plan: \(plan)")
    }
}
