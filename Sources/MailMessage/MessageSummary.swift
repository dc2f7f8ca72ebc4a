import Foundation

/// What lists and searches show of a message: its capture facts and the decoded headers,
/// a snippet and the text search runs on. Built from the capture metadata and the MIME parse.
public struct MessageSummary: Codable, Hashable, Sendable {
    public var id: String
    public var messageID: String
    public var from: MailAddress?
    public var to: [MailAddress]
    public var cc: [MailAddress]
    /// Bcc header addresses, plus envelope recipients named in no To or Cc header.
    public var bcc: [MailAddress]
    public var replyTo: [MailAddress]
    public var returnPath: String
    public var subject: String
    /// When the sink captured it.
    public var created: Date
    /// The Date header, if it parses.
    public var date: Date?
    public var size: Int
    public var attachmentCount: Int
    public var inlineCount: Int
    public var snippet: String
    /// Lower-cased: From, Subject, To, Cc, Bcc, Reply-To, Return-Path, the body text (HTML as
    /// text) and attachment names, as Mailpit searches them.
    public var searchText: String

    public init(captured: CapturedMessage, parsed: ParsedMessage?) {
        id = captured.id
        created = Date(timeIntervalSince1970: Double(captured.timestamps.dataEndNanos) / 1e9)
        size = captured.size
        returnPath = captured.envelope.mailFrom
        guard let parsed else {
            messageID = ""
            from = captured.envelope.mailFrom.isEmpty ? nil : MailAddress(name: "", address: captured.envelope.mailFrom)
            to = captured.envelope.recipients.map { MailAddress(name: "", address: $0.address) }
            cc = []
            bcc = []
            replyTo = []
            subject = ""
            date = nil
            attachmentCount = 0
            inlineCount = 0
            snippet = ""
            searchText = (returnPath + " " + to.map(\.address).joined(separator: " ")).lowercased()
            return
        }
        messageID = parsed.messageID ?? ""
        from = parsed.from
        to = parsed.to
        cc = parsed.cc
        replyTo = parsed.replyTo
        let named = Set((parsed.to + parsed.cc + parsed.bcc).map { $0.address.lowercased() })
        bcc =
            parsed.bcc
            + captured.envelope.recipients.filter { !named.contains($0.address.lowercased()) }
            .map { MailAddress(name: "", address: $0.address) }
        subject = parsed.subject
        date = parsed.date
        attachmentCount = parsed.attachments.count
        inlineCount = parsed.inline.count
        snippet = parsed.snippet
        var search: [String] = []
        func add(_ addresses: [MailAddress]) {
            for address in addresses {
                search.append(address.name)
                search.append(address.address)
            }
        }
        add(from.map { [$0] } ?? [])
        search.append(subject)
        add(to)
        add(cc)
        add(bcc)
        add(replyTo)
        search.append(returnPath)
        search.append(parsed.plainText)
        search.append(contentsOf: parsed.attachments.map(\.fileName))
        searchText = search.joined(separator: " ").lowercased()
    }
}

extension MessageSummary {
    /// The summary as compact JSON, with the keys and shapes its `Codable` conformance reads
    /// (dates as seconds since 2001, `JSONDecoder`'s default), written directly: the index
    /// writes one per stored message, and `JSONEncoder` was 3% of the sink's CPU with `--data`.
    public func jsonData() -> Data {
        var out = JSONWriter()
        out.object {
            $0.field("id") { $0.string(id) }
            $0.field("messageID") { $0.string(messageID) }
            if let from { $0.field("from") { $0.address(from) } }
            $0.field("to") { $0.array(to) { $0.address($1) } }
            $0.field("cc") { $0.array(cc) { $0.address($1) } }
            $0.field("bcc") { $0.array(bcc) { $0.address($1) } }
            $0.field("replyTo") { $0.array(replyTo) { $0.address($1) } }
            $0.field("returnPath") { $0.string(returnPath) }
            $0.field("subject") { $0.string(subject) }
            $0.field("created") { $0.double(created.timeIntervalSinceReferenceDate) }
            if let date { $0.field("date") { $0.double(date.timeIntervalSinceReferenceDate) } }
            $0.field("size") { $0.number(Int64(size)) }
            $0.field("attachmentCount") { $0.number(Int64(attachmentCount)) }
            $0.field("inlineCount") { $0.number(Int64(inlineCount)) }
            $0.field("snippet") { $0.string(snippet) }
            $0.field("searchText") { $0.string(searchText) }
        }
        return Data(out.bytes)
    }
}

extension JSONWriter {
    mutating func address(_ value: MailAddress) {
        object {
            $0.field("Name") { $0.string(value.name) }
            $0.field("Address") { $0.string(value.address) }
        }
    }

    /// A finite number, in the shortest form that reads back exactly.
    public mutating func double(_ value: Double) {
        bytes.append(contentsOf: (value.isFinite ? "\(value)" : "0").utf8)
        needsComma = true
    }
}
