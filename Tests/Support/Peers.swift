import Foundation

/// The real peers some tests drive (swaks, curl, python3 and its packages, Postfix, Chromium).
///
/// Two tiers: the unit tier needs no peer (`SWALLOW_TIER=unit swift test` runs only it); the
/// peer tier runs when its peers are installed. Run by hand without a peer, its suites are
/// skipped with the reason; `scripts/test` installs every peer and sets
/// `SWALLOW_REQUIRE_PEERS=1`, so in CI a missing peer fails its tests instead of skipping them.
public enum Peers {
    /// Whether every one of `tools` can run here (executables on PATH or in Postfix's places).
    public static func available(_ tools: String...) -> Bool {
        let environment = ProcessInfo.processInfo.environment
        if environment["SWALLOW_TIER"] == "unit" { return false }
        if environment["SWALLOW_REQUIRE_PEERS"] == "1" { return true }
        let path = (environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":").map(String.init)
        let places = path + ["/usr/sbin", "/usr/lib/postfix/sbin"]
        return tools.allSatisfy { tool in
            places.contains { FileManager.default.isExecutableFile(atPath: $0 + "/" + tool) }
        }
    }

    /// Why a suite was skipped.
    public static func reason(_ tools: String...) -> String {
        ProcessInfo.processInfo.environment["SWALLOW_TIER"] == "unit"
            ? "SWALLOW_TIER=unit: peer tests skipped"
            : "needs \(tools.joined(separator: ", ")) (scripts/test installs them)"
    }
}

/// Tests that need no peer but take long by design (every shipped scenario run for its full
/// duration): part of the full run, left out of the unit tier so that stays under a minute.
public enum Tier {
    public static var runsLong: Bool {
        ProcessInfo.processInfo.environment["SWALLOW_TIER"] != "unit"
    }

    public static let longReason = "SWALLOW_TIER=unit: long end-to-end test skipped"
}
