/// The version `swallow --version` prints. `scripts/release` writes the release's (the git
/// tag, or `0.0.0-dev+COMMIT`) here for the release build and restores this file after.
enum SwallowVersion {
    static let current = "0.0.0-dev"
}
