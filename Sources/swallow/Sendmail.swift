import ArgumentParser
import Foundation
import LoadGen
import MailMessage
import SMTPClient
import SMTPProtocol

/// `swallow sendmail`: a sendmail-compatible submission command, so PHP's `mail()`
/// (`sendmail_path = "swallow sendmail -t -i"`), cron and scripts can mail a sink. The binary
/// also behaves so when it is invoked under the name `sendmail` (a symlink).
///
/// Decisions where sendmail implementations differ, chosen for a sandbox:
/// - the envelope sender is `-f`/`-r`, else the first address of the `From:` header, else
///   `$USER@localhost`;
/// - with `-t` the recipients of `To:`, `Cc:` and `Bcc:` are added to those given as
///   arguments, and the `Bcc:` field is removed from the message;
/// - the message is sent as read (bare LF line ends become CRLF); no header is added;
/// - `-F`, `-o` options other than `-oi`, `-v`, `-bm` and `-U` are accepted and ignored; any
///   other flag is a usage error (exit 2).
///
/// Exit status: 0 when the message was accepted (250) for every recipient; 75 (EX_TEMPFAIL)
/// on a 4xx reply or a lost connection; 69 (EX_UNAVAILABLE) on a 5xx reply or when the
/// sink cannot be reached. A recipient refused while others were accepted sets the status
/// by its reply class. Every refusal is printed on stderr.
struct Sendmail: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sendmail",
        abstract: "Submit a message read from stdin to a sink, as sendmail does.",
        usage: "swallow sendmail [-t] [-i] [-f FROM] [--smtp-addr HOST:PORT] [RECIPIENT...] < message",
        discussion: """
            -t              add the recipients of the To, Cc and Bcc headers (Bcc is removed)
            -i, -oi         a line with a single dot does not end the message
            -f FROM, -r     the envelope sender (default: the From header's address)
            --smtp-addr     the sink's SMTP address, HOST:PORT (default: $SWALLOW_SMTP, else 127.0.0.1:1025)
            Exit status: 0 accepted, 75 on a 4xx reply, 69 on a 5xx reply or no connection, 2 on bad usage.
            """
    )

    @Argument(parsing: .captureForPassthrough, help: "sendmail's flags and the recipients.")
    var arguments: [String] = []

    func run() async throws {
        throw ExitCode(await Self.execute(arguments))
    }

    static let exitTempFail: Int32 = 75
    static let exitUnavailable: Int32 = 69
    static let exitUsage: Int32 = 2

    /// What the command line asks for.
    struct Invocation: Equatable {
        var extractRecipients = false
        var ignoreDots = false
        var sender: String?
        var smtpAddress: String?
        var recipients: [String] = []
        var help = false
    }

    struct UsageError: Error, CustomStringConvertible {
        var description: String
    }

    /// Parses sendmail's command line: flags may carry their value attached (`-ffrom@x`) or
    /// as the next argument; recipients may be comma-separated.
    static func parse(_ arguments: [String]) throws(UsageError) -> Invocation {
        var invocation = Invocation()
        var index = 0
        func value(_ flag: String, attached: Substring) throws(UsageError) -> String {
            if !attached.isEmpty { return String(attached) }
            index += 1
            guard index < arguments.count else { throw UsageError(description: "\(flag) needs a value") }
            return arguments[index]
        }
        var optionsEnded = false
        while index < arguments.count {
            let argument = arguments[index]
            defer { index += 1 }
            if optionsEnded || !argument.hasPrefix("-") || argument == "-" {
                invocation.recipients += argument.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
                continue
            }
            if argument == "--" {
                optionsEnded = true
                continue
            }
            if argument == "--help" || argument == "-h" {
                invocation.help = true
                continue
            }
            if argument.hasPrefix("--smtp-addr") {
                let attached = argument.dropFirst("--smtp-addr".count)
                if attached.isEmpty {
                    invocation.smtpAddress = try value("--smtp-addr", attached: "")
                } else if attached.hasPrefix("=") {
                    invocation.smtpAddress = String(attached.dropFirst())
                } else {
                    throw UsageError(description: "unknown option \(argument)")
                }
                continue
            }
            let flag = argument.dropFirst().first!
            let attached = argument.dropFirst(2)
            switch flag {
            case "t" where attached.isEmpty: invocation.extractRecipients = true
            case "i" where attached.isEmpty: invocation.ignoreDots = true
            case "f", "r": invocation.sender = try value("-\(flag)", attached: attached)
            case "S": invocation.smtpAddress = try value("-S", attached: attached)
            case "F": _ = try value("-F", attached: attached)
            case "o":
                // -oi as -i; other sendmail.cf options (-odb, -oem, -oQ…) mean nothing here.
                if attached == "i" { invocation.ignoreDots = true }
            case "v" where attached.isEmpty, "U" where attached.isEmpty: break
            case "b":
                guard attached == "m" else { throw UsageError(description: "-b\(attached): only -bm (deliver a message) is supported") }
            default:
                throw UsageError(description: "unknown option \(argument)")
            }
        }
        return invocation
    }

    /// Reads the message: all of stdin, or up to a line holding a single dot unless `-i`.
    /// Line ends become CRLF.
    static func readMessage(_ input: Data, ignoreDots: Bool) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(input.count + input.count / 40)
        var lineStart = input.startIndex
        while lineStart < input.endIndex {
            var end = input[lineStart...].firstIndex(of: UInt8(ascii: "\n")) ?? input.endIndex
            let next = end < input.endIndex ? end + 1 : end
            if end > lineStart && input[end - 1] == UInt8(ascii: "\r") { end -= 1 }
            let line = input[lineStart..<end]
            if !ignoreDots && line.elementsEqual([UInt8(ascii: ".")]) { break }
            out.append(contentsOf: line)
            out.append(contentsOf: [13, 10])
            lineStart = next
        }
        return out
    }

    /// The header fields' recipients (To, Cc, Bcc), and the message without its Bcc field.
    static func extractRecipients(_ message: [UInt8]) -> (recipients: [String], message: [UInt8]) {
        let (headers, bodyStart) = HeaderSection.parse(message[...])
        let recipients = ["To", "Cc", "Bcc"].flatMap { headers.values($0) }.flatMap { MailAddress.parseList($0) }.map(\.address)
        // Remove "Bcc:" and its continuation lines from the header section.
        var kept: [UInt8] = []
        kept.reserveCapacity(message.count)
        var index = 0
        var skipping = false
        while index < bodyStart {
            var end = index
            while end < bodyStart && message[end] != UInt8(ascii: "\n") { end += 1 }
            let next = min(end + 1, bodyStart)
            let line = message[index..<next]
            let continuation = line.first == UInt8(ascii: " ") || line.first == UInt8(ascii: "\t")
            if !continuation { skipping = line.count >= 4 && String(decoding: line.prefix(4), as: UTF8.self).lowercased() == "bcc:" }
            if !skipping { kept.append(contentsOf: line) }
            index = next
        }
        kept.append(contentsOf: message[bodyStart...])
        return (recipients, kept)
    }

    static func printError(_ text: String) {
        FileHandle.standardError.write(Data("swallow sendmail: \(text)\n".utf8))
    }

    /// Runs the command with sendmail's arguments; returns the exit status.
    static func execute(_ arguments: [String]) async -> Int32 {
        let invocation: Invocation
        do {
            invocation = try parse(arguments)
        } catch {
            printError("\(error) (see swallow sendmail --help)")
            return exitUsage
        }
        if invocation.help {
            print(Sendmail.helpMessage())
            return 0
        }
        let addressText = invocation.smtpAddress ?? ProcessInfo.processInfo.environment["SWALLOW_SMTP"] ?? "127.0.0.1:1025"
        guard let target = LoadTarget(parsing: addressText) else {
            printError("--smtp-addr: expected HOST:PORT, got \(addressText)")
            return exitUsage
        }
        var message = readMessage(FileHandle.standardInput.readDataToEndOfFile(), ignoreDots: invocation.ignoreDots)
        var recipients = invocation.recipients
        if invocation.extractRecipients {
            let extracted = extractRecipients(message)
            recipients += extracted.recipients
            message = extracted.message
        }
        var seen = Set<String>()
        recipients = recipients.filter { seen.insert($0.lowercased()).inserted }
        guard !recipients.isEmpty else {
            printError("no recipients: give them as arguments, or -t to read To, Cc and Bcc")
            return exitUsage
        }
        let sender =
            invocation.sender
            ?? HeaderSection.parse(message[...]).0["From"].flatMap { MailAddress.parseList($0).first?.address }
            ?? "\(ProcessInfo.processInfo.environment["USER"] ?? "sendmail")@localhost"

        let result = await MailSubmission.submit(to: target, sender: sender, recipients: recipients, data: message)
        guard let reply = result.reply else {
            let failure = result.failure.map { "\($0)" } ?? "no reply"
            printError("\(target): \(failure)")
            if case .connect = result.failure { return exitUnavailable }
            return exitTempFail
        }
        var status: Int32 = 0
        func account(_ reply: SMTPReplyClass) {
            switch reply {
            case .permanent: status = exitUnavailable
            case .transient where status == 0: status = exitTempFail
            default: break
            }
        }
        for (recipient, refusal) in result.refusedRecipients {
            printError("<\(recipient)>: \(Self.describe(refusal))")
            account(SMTPReplyClass(refusal.code.rawValue))
        }
        if reply.code.rawValue / 100 != 2 {
            printError("\(result.phase): \(Self.describe(reply))")
        }
        account(SMTPReplyClass(reply.code.rawValue))
        return status
    }

    /// `451 4.7.1 Try again later` (the lines of a multi-line reply joined).
    static func describe(_ reply: SMTPReply) -> String {
        var text = "\(reply.code.rawValue)"
        if let enhanced = reply.enhanced { text += " \(enhanced)" }
        return text + " " + reply.lines.joined(separator: " / ")
    }

    enum SMTPReplyClass {
        case success, transient, permanent
        init(_ code: Int) {
            self = code >= 500 ? .permanent : code >= 400 ? .transient : .success
        }
    }
}
