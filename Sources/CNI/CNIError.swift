// The CNI spec's error result: a code (its well-known ones and berth's own from 100), a short
// message and details, printed as JSON on stdout with a non-zero exit.

import Control
import JSON
import Mappings

package struct CNIError: Error, Sendable, Equatable, CustomStringConvertible {
    package var code: Int
    package var msg: String
    package var details: String

    /// `msg` and `details` are one line each whatever they quote: a line break that JSON leaves
    /// raw (U+2028, NEL, in a member name the message shows, or in the daemon's answer) is escaped.
    package init(_ code: Int, _ msg: String, details: String = "") {
        self.code = code
        self.msg = Self.oneLine(msg)
        self.details = Self.oneLine(details)
    }

    private static func oneLine(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: breaksLines) else { return text }
        var out = ""
        for scalar in text.unicodeScalars {
            if breaksLines(scalar) {
                out += "\\u{" + String(scalar.value, radix: 16) + "}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    // The spec's codes (SPEC.md, "Error").
    package static let incompatibleVersion = 1
    package static let invalidEnvironment = 4
    package static let ioFailure = 5
    package static let decodeFailure = 6
    package static let invalidConfig = 7
    package static let notAvailable = 50
    // berth's own.
    /// A host port another attachment or a host process holds.
    package static let hostPortTaken = 100
    /// A mapping only a berth daemon can serve (loopback, or across address families).
    package static let needsDaemon = 101
    /// CHECK: a mapping ADD made is not there any more.
    package static let mappingMissing = 102

    package var description: String { details.isEmpty ? msg : "\(msg): \(details)" }

    package func json(cniVersion: String) -> JSONValue {
        .object([
            ("cniVersion", .string(cniVersion)), ("code", .number(Double(code))), ("msg", .string(msg)),
            ("details", .string(details)),
        ])
    }
}
