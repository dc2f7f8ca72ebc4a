import ArgumentParser
import Foundation
import LoadGen
import SwallowConfig

/// `swallow report merge A.json B.json ...`: one report from the shards of a run.
struct Report: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Work with `swallow load` JSON reports.",
        subcommands: [Merge.self]
    )

    struct Merge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Merge the JSON reports of a run's shards (`swallow load --shard K/N --report ...`) into one.",
            discussion: """
                Counts are added, latency histograms added (exact percentiles), and every expectation is \
                evaluated again on the merged figures. Exit status: 0 when every expectation holds, 1 when \
                one fails, 2 for bad input (unreadable reports, different scenarios or seeds).
                """
        )

        @Argument(help: "The shards' JSON reports.")
        var reports: [String]

        @Option(help: "Write the merged JSON report here.")
        var json: String?

        @Option(help: "Write a self-contained HTML report with plots here.")
        var html: String?

        @Option(help: "Write JUnit XML (one test case per expectation) here.")
        var junit: String?

        func run() async throws {
            let merged: LoadReport
            do throws(InputError) {
                var inputs: [(file: String, report: LoadReport)] = []
                for path in reports { inputs.append((path, try LoadReport.read(path: path))) }
                merged = try LoadReport.merge(inputs)
            } catch {
                FileHandle.standardError.write(Data("error: \(error)\n".utf8))
                throw ExitCode(2)
            }
            print(merged.summary())
            if let json { try merged.json().write(to: URL(fileURLWithPath: json)) }
            if let html { try Data(merged.html().utf8).write(to: URL(fileURLWithPath: html)) }
            if let junit { try Data(merged.junit().utf8).write(to: URL(fileURLWithPath: junit)) }
            if !merged.passed { throw ExitCode(1) }
        }
    }
}
