// Small text helpers shared by the `-p` grammar and the command-line parsers.

/// The outcome of reading a port number written in plain decimal.
enum DecimalPort: Equatable {
    case value(UInt16)
    /// Decimal digits only, but above 65535.
    case tooLarge
    /// Empty, or something other than ASCII decimal digits (a sign, a space, a letter).
    case notANumber

    /// Reads ASCII decimal digits; leading zeros are accepted (`080` is 80, as Docker's `-p` reads it).
    init(_ text: some StringProtocol) {
        guard !text.isEmpty else {
            self = .notANumber
            return
        }
        var value = 0
        for byte in text.utf8 {
            guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else {
                self = .notANumber
                return
            }
            if value <= 65535 {
                value = value * 10 + Int(byte - UInt8(ascii: "0"))
            }
        }
        self = value <= 65535 ? .value(UInt16(value)) : .tooLarge
    }
}

/// `text` in double quotes, with quotes, backslashes and control characters escaped (C0, DEL, C1 with
/// NEL, and the Unicode line and paragraph separators), so that an error message that quotes user input
/// stays on one line.
package func quoted(_ text: some StringProtocol) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if breaksLines(scalar) {
                out += "\\u{" + String(scalar.value, radix: 16) + "}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out + "\""
}

/// A control character, or one that a terminal or a log reader may take as the end of a line.
package func breaksLines(_ scalar: Unicode.Scalar) -> Bool {
    scalar.value < 0x20 || (0x7f...0x9f).contains(scalar.value) || scalar.value == 0x2028 || scalar.value == 0x2029
}

/// `text` as it is when it is plain, in quotes (`quoted`) when it holds anything that could break the
/// line: for wordings that print user input bare, as Go's `flag` package does.
package func plain(_ text: some StringProtocol) -> String {
    text.unicodeScalars.contains(where: breaksLines) ? quoted(text) : String(text)
}
