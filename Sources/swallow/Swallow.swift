import ArgumentParser

struct Swallow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swallow",
        abstract: "A sandbox SMTP sink and mail load generator.",
        version: SwallowVersion.current,
        subcommands: [Serve.self, Load.self, Assert.self, Report.self, Sendmail.self, Health.self]
    )
}
