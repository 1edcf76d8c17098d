// JSON bodies of the control API: parsed with cJSON (Debian's libcjson), then held as a plain
// Swift value; written by `serialized()`. Object members keep their order, and a repeated
// member name is refused rather than silently resolved.

import CControlParsers
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

    /// Parses a whole document; the error is one line a user can act on.
    public static func parse(_ bytes: [UInt8]) -> Result<JSONValue, JSONError> {
        guard !bytes.isEmpty else { return .failure(JSONError("the body is empty: expected a JSON object")) }
        let parsed: UnsafeMutablePointer<cJSON>? = bytes.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { chars in
                var end: UnsafePointer<CChar>? = nil
                return cJSON_ParseWithLengthOpts(chars.baseAddress, chars.count, &end, 0)
            }
        }
        guard let root = parsed else { return .failure(JSONError("the body is not valid JSON")) }
        defer { cJSON_Delete(root) }
        return convert(root, depth: 0)
    }

    private static func convert(_ item: UnsafeMutablePointer<cJSON>, depth: Int) -> Result<JSONValue, JSONError> {
        if depth > 32 { return .failure(JSONError("the body nests too deeply")) }
        let type = item.pointee.type & 0xFF
        switch Int32(type) {
        case cJSON_Object:
            var members: [(String, JSONValue)] = []
            var child = item.pointee.child
            while let c = child {
                let name = c.pointee.string.map { String(cString: $0) } ?? ""
                if members.contains(where: { $0.0 == name }) {
                    return .failure(JSONError("the field \(quoted(name)) appears twice"))
                }
                switch convert(c, depth: depth + 1) {
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
                switch convert(c, depth: depth + 1) {
                case .success(let v): elements.append(v)
                case .failure(let e): return .failure(e)
                }
                child = c.pointee.next
            }
            return .success(.array(elements))
        case cJSON_String:
            return .success(.string(item.pointee.valuestring.map { String(cString: $0) } ?? ""))
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

    public func serialized() -> String {
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
    public subscript(member name: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.0 == name }?.1
    }

    /// The members of an object that has only the `allowed` fields; the error names the first other one.
    public func fields(allowed: [String]) -> Result<[String: JSONValue], JSONError> {
        guard case .object(let members) = self else { return .failure(JSONError("the body must be a JSON object")) }
        var result: [String: JSONValue] = [:]
        for (name, value) in members {
            guard allowed.contains(name) else { return .failure(JSONError("unknown field \(quoted(name))")) }
            result[name] = value
        }
        return .success(result)
    }
}

public struct JSONError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
