import Foundation

/// RFC 5322 §3.3 date-time (`Tue, 24 Nov 2026 09:05:00 +0000`), leniently: the day name,
/// seconds and zone may be missing, obsolete zone names (GMT, UT, EST...) are accepted.
public enum MailDate {
    public static func parse(_ text: String) -> Date? {
        var tokens = text.replacingOccurrences(of: ",", with: " ").split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        // Drop comments such as "(UTC)".
        tokens.removeAll { $0.hasPrefix("(") }
        if let first = tokens.first, Int(first) == nil { tokens.removeFirst() }
        guard tokens.count >= 4, let day = Int(tokens[0]), let month = months[tokens[1].lowercased().prefix(3).description],
            var year = Int(tokens[2])
        else { return nil }
        if year < 50 { year += 2000 } else if year < 1000 { year += 1900 }
        let clock = tokens[3].split(separator: ":").compactMap { Int($0) }
        // Out-of-range fields are refused here rather than handed to Calendar (mail is hostile input).
        guard clock.count >= 2, (1...9999).contains(year), (1...31).contains(day), (0...23).contains(clock[0]), (0...59).contains(clock[1]),
            clock.count < 3 || (0...60).contains(clock[2])
        else { return nil }
        var offsetSeconds = 0
        if tokens.count >= 5 {
            let zone = tokens[4]
            if (zone.hasPrefix("+") || zone.hasPrefix("-")) && zone.count == 5, zone.dropFirst().allSatisfy(\.isASCII),
                let value = Int(zone.dropFirst()), value >= 0
            {
                offsetSeconds = (value / 100 * 3600 + value % 100 * 60) * (zone.hasPrefix("-") ? -1 : 1)
            } else if let hours = zones[zone.uppercased()] {
                offsetSeconds = hours * 3600
            }
        }
        var components = DateComponents()
        components.year = year
        components.month = month
        components.day = day
        components.hour = clock[0]
        components.minute = clock[1]
        components.second = clock.count > 2 ? clock[2] : 0
        components.timeZone = TimeZone(secondsFromGMT: 0)
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(secondsFromGMT: 0)!
        guard let utc = calendar.date(from: components) else { return nil }
        return utc.addingTimeInterval(TimeInterval(-offsetSeconds))
    }

    private static let months: [String: Int] = [
        "jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12,
    ]
    private static let zones: [String: Int] = [
        "UT": 0, "UTC": 0, "GMT": 0, "Z": 0, "EST": -5, "EDT": -4, "CST": -6, "CDT": -5, "MST": -7, "MDT": -6, "PST": -8, "PDT": -7,
    ]
}
