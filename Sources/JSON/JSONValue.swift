// JSON bodies of the control API: parsed with cJSON (Debian's libcjson), then held as a plain
// Swift value; written by `serialized()`. Object members keep their order, and a repeated
// member name is refused rather than silently resolved.

import CControlParsers
import Glibc
import Mappings

public indirect enum JSONValue: Sendable, Equatable {
    case object([(String, JSONValue)])
    case array([JSONValue])
    case string(String)
    case number(Double)
    case bool(Bool)
    case null

    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.object(let x), .object(let y)): return x.map(\.0) == y.map(\.0) && x.map(\.1) == y.map(\.1)
        case (.array(let x), .array(let y)): return x == y
        case (.string(let x), .string(let y)): return x == y
        case (.number(let x), .number(let y)): return x == y
        case (.bool(let x), .bool(let y)): return x == y
        case (.null, .null): return true
        default: return false
        }
    }

    /// What a document may hold. cJSON itself parses in linear time; these bound what is built
    /// from it, so a body of 1 MiB cannot make the control thread busy for seconds.
    package struct Limits: Sendable {
        package var depth = 32
        package var members = 4096
        package var elements = 1 << 16
        /// Bytes of one string (a member name included).
        package var stringBytes = 1 << 16
        /// Control characters (U+0000 to U+001F, U+007F) in strings: refused in control API
        /// requests, where every string is a name, an address or a spec.
        package var controlCharacters = true

        /// A control API request: every field is small and printable.
        package static let request = Limits(
            depth: 8,
            members: 64,
            elements: 4096,
            stringBytes: 4096,
            controlCharacters: false
        )
        /// Any other document (CNI's stdin, the daemon's answers): generous, but bounded.
        package static let document = Limits()
    }

    /// Parses a whole document; the error is one line a user can act on. Refused besides what is
    /// not JSON: anything but whitespace after the document, a NUL in a string (`\u0000`: C
    /// strings cannot hold it, and `web\u0000x` would alias `web`), invalid UTF-8 (never
    /// repaired), and what is over `limits`.
    package static func parse(_ bytes: [UInt8], limits: Limits = .document) -> Result<JSONValue, JSONError> {
        guard !bytes.isEmpty else { return .failure(JSONError("the body is empty: expected a JSON object")) }
        if let problem = scan(bytes) { return .failure(problem) }
        // Checked on the bytes, not only on cJSON's strings: it drops what follows a bad escape.
        guard String(validating: bytes, as: UTF8.self) != nil else {
            return .failure(JSONError("the body is not valid UTF-8"))
        }
        var endOffset = 0
        let parsed: UnsafeMutablePointer<cJSON>? = bytes.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { chars in
                guard let base = chars.baseAddress else { return nil }
                var end: UnsafePointer<CChar>? = nil
                let root = cJSON_ParseWithLengthOpts(base, chars.count, &end, 0)
                if let end { endOffset = UnsafePointer(base).distance(to: end) }
                return root
            }
        }
        guard let root = parsed else { return .failure(JSONError("the body is not valid JSON")) }
        defer { cJSON_Delete(root) }
        if bytes[min(endOffset, bytes.count)...].contains(where: { !isWhitespace($0) }) {
            return .failure(JSONError("the body has more after its JSON document"))
        }
        return convert(root, depth: 0, limits: limits)
    }

    private static func isWhitespace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D }

    private static func isHexDigit(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66)
    }

    /// What cJSON would pass silently: a raw control byte in a string (JSON has none; tab, line
    /// feed and carriage return only between tokens) or anywhere outside whitespace, and
    /// `\u0000`. One pass; an escape's backslash and the character after it are taken together,
    /// so `\\u0000` (a backslash, then text) is not mistaken for one.
    private static func scan(_ bytes: [UInt8]) -> JSONError? {
        var i = 0
        var inString = false
        while i < bytes.count {
            let b = bytes[i]
            if b < 0x20 && (inString || !isWhitespace(b)) {
                return JSONError("the body holds a control character (byte \(b))")
            }
            if b == UInt8(ascii: "\"") { inString.toggle() }
            if inString, b == UInt8(ascii: "\\"), i + 1 < bytes.count {
                if bytes[i + 1] == UInt8(ascii: "u") {
                    // cJSON reads a short or non-hex `\\u` escape as U+0000, which ends its C string.
                    guard i + 5 < bytes.count, bytes[(i + 2)...(i + 5)].allSatisfy(isHexDigit) else {
                        return JSONError("a string has a \\u escape without four hex digits")
                    }
                    if bytes[(i + 2)...(i + 5)].allSatisfy({ $0 == UInt8(ascii: "0") }) {
                        return JSONError("a string holds a NUL character (\\u0000)")
                    }
                }
                i += 2
                continue
            }
            i += 1
        }
        return nil
    }

    /// A cJSON string as Swift text: valid UTF-8, within the limits, or the reason why not.
    private static func text(
        _ pointer: UnsafeMutablePointer<CChar>?,
        limits: Limits
    ) -> Result<String, JSONError> {
        guard let pointer else { return .success("") }
        let count = strlen(pointer)
        if count > limits.stringBytes {
            return .failure(JSONError("a string is over \(limits.stringBytes) bytes"))
        }
        guard let text = String(validatingCString: pointer) else {
            return .failure(JSONError("a string is not valid UTF-8"))
        }
        if !limits.controlCharacters, text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            return .failure(JSONError("\(quoted(text)) holds a control character"))
        }
        return .success(text)
    }

    private static func convert(
        _ item: UnsafeMutablePointer<cJSON>,
        depth: Int,
        limits: Limits
    ) -> Result<JSONValue, JSONError> {
        if depth > limits.depth { return .failure(JSONError("the body nests too deeply")) }
        let type = item.pointee.type & 0xFF
        switch Int32(type) {
        case cJSON_Object:
            var members: [(String, JSONValue)] = []
            var names = Set<String>()
            var child = item.pointee.child
            while let c = child {
                if members.count == limits.members {
                    return .failure(JSONError("an object has more than \(limits.members) members"))
                }
                let name: String
                switch text(c.pointee.string, limits: limits) {
                case .success(let n): name = n
                case .failure(let e): return .failure(e)
                }
                guard names.insert(name).inserted else {
                    return .failure(JSONError("the field \(quoted(name)) appears twice"))
                }
                switch convert(c, depth: depth + 1, limits: limits) {
                case .success(let v): members.append((name, v))
                case .failure(let e): return .failure(e)
                }
                child = c.pointee.next
            }
            return .success(.object(members))
        case cJSON_Array:
            var elements: [JSONValue] = []
            var child = item.pointee.child
            while let c = child {
                if elements.count == limits.elements {
                    return .failure(JSONError("a list has more than \(limits.elements) elements"))
                }
                switch convert(c, depth: depth + 1, limits: limits) {
                case .success(let v): elements.append(v)
                case .failure(let e): return .failure(e)
                }
                child = c.pointee.next
            }
            return .success(.array(elements))
        case cJSON_String:
            return text(item.pointee.valuestring, limits: limits).map { .string($0) }
        case cJSON_Number:
            return .success(.number(item.pointee.valuedouble))
        case cJSON_True:
            return .success(.bool(true))
        case cJSON_False:
            return .success(.bool(false))
        case cJSON_NULL:
            return .success(.null)
        default:
            return .failure(JSONError("the body is not valid JSON"))
        }
    }

    package func serialized() -> String {
        switch self {
        case .object(let members):
            return "{" + members.map { "\(Self.quote($0.0)):\($0.1.serialized())" }.joined(separator: ",") + "}"
        case .array(let elements):
            return "[" + elements.map { $0.serialized() }.joined(separator: ",") + "]"
        case .string(let s):
            return Self.quote(s)
        case .number(let n):
            return n == n.rounded() && abs(n) < 1e15 ? String(Int64(n)) : "\(n)"
        case .bool(let b):
            return b ? "true" : "false"
        case .null:
            return "null"
        }
    }

    static func quote(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    // MARK: reading fields

    /// The member `name` of an object (parse refuses a name twice); nil for anything else.
    package subscript(member name: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.0 == name }?.1
    }

    /// The members of an object that has only the `allowed` fields; the error names the first other one.
    package func fields(allowed: [String]) -> Result<[String: JSONValue], JSONError> {
        guard case .object(let members) = self else { return .failure(JSONError("the body must be a JSON object")) }
        var result: [String: JSONValue] = [:]
        for (name, value) in members {
            guard allowed.contains(name) else { return .failure(JSONError("unknown field \(quoted(name))")) }
            result[name] = value
        }
        return .success(result)
    }
}

package struct JSONError: Error, Sendable, Equatable, CustomStringConvertible {
    package let description: String
    package init(_ description: String) { self.description = description }
}
