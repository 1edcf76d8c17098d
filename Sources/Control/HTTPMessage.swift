// HTTP/1.1 messages of the control API, read with http-parser (Debian's libhttp-parser): a
// request on the daemon's side, a response on the client's. Bounded: headers by http-parser's
// own limit (80 KiB), bodies by `maximumBody`. One message per connection (the daemon answers
// with `Connection: close`), so pipelining never comes up.

import CControlParsers
import JSON

/// A request as the router sees it.
package struct HTTPRequest: Sendable, Equatable {
    package var method: String
    /// The path without the query (`/v1/ports/3`).
    package var path: String
    /// The query's `name=value` pairs, percent-decoded.
    package var query: [String: String]
    package var body: [UInt8]

    package init(method: String, path: String, query: [String: String] = [:], body: [UInt8] = []) {
        self.method = method
        self.path = path
        self.query = query
        self.body = body
    }
}

/// An answer: a status and a JSON (or text) body.
package struct HTTPResponse: Sendable, Equatable {
    package var status: Int
    package var contentType: String
    package var body: [UInt8]

    package init(status: Int, contentType: String = "application/json", body: [UInt8]) {
        self.status = status
        self.contentType = contentType
        self.body = body
    }

    package init(status: Int, json: JSONValue) {
        self.init(status: status, body: Array(json.serialized().utf8))
    }

    /// `{"message": ...}`: rootlesskit's error shape, which berth's own endpoints share.
    package static func error(_ status: Int, _ message: String) -> HTTPResponse {
        HTTPResponse(status: status, json: .object([("message", .string(message))]))
    }

    /// The bytes on the wire.
    package var serialized: [UInt8] { head(contentLength: body.count) + body }

    /// The status line and headers, for a body of `contentLength` bytes sent after them.
    package func head(contentLength: Int) -> [UInt8] {
        Array(
            ("HTTP/1.1 \(status) \(Self.reason(status))\r\nContent-Type: \(contentType)\r\n"
                + "Content-Length: \(contentLength)\r\nConnection: close\r\n\r\n").utf8
        )
    }

    static func reason(_ status: Int) -> String {
        switch status {
        case 200: return "OK"
        case 201: return "Created"
        case 400: return "Bad Request"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 409: return "Conflict"
        case 413: return "Payload Too Large"
        case 415: return "Unsupported Media Type"
        case 500: return "Internal Server Error"
        default: return "Status"
        }
    }
}

/// Reads one HTTP message from bytes as they arrive.
package final class HTTPReader {
    package enum Outcome: Equatable {
        case needMore
        case request(HTTPRequest)
        case response(status: Int, body: [UInt8])
        /// A malformed message, or one over a limit: the status to answer with, and why.
        case bad(status: Int, message: String)
    }

    package static let maximumBody = 1 << 20

    private let maximumBody: Int
    private var parser = http_parser()
    private var settings = http_parser_settings()
    private let isRequest: Bool
    fileprivate var url: [UInt8] = []
    fileprivate var body: [UInt8] = []
    fileprivate var complete = false
    fileprivate var tooLarge = false

    /// `maximumBody`: bytes of body taken at most (0: a request must have none).
    package init(requests: Bool = true, maximumBody: Int = HTTPReader.maximumBody) {
        isRequest = requests
        self.maximumBody = maximumBody
        http_parser_init(&parser, requests ? HTTP_REQUEST : HTTP_RESPONSE)
        http_parser_settings_init(&settings)
        settings.on_url = { parser, at, length in
            guard let parser, let at, let reader = HTTPReader.from(parser) else { return 1 }
            if reader.url.count + length > 8192 { return 1 }
            reader.url += UnsafeRawBufferPointer(start: at, count: length)
            return 0
        }
        settings.on_body = { parser, at, length in
            guard let parser, let at, let reader = HTTPReader.from(parser) else { return 1 }
            if reader.body.count + length > reader.maximumBody {
                reader.tooLarge = true
                return 1
            }
            reader.body += UnsafeRawBufferPointer(start: at, count: length)
            return 0
        }
        settings.on_message_complete = { parser in
            guard let parser, let reader = HTTPReader.from(parser) else { return 1 }
            reader.complete = true
            // Stop here: whatever follows is not read.
            http_parser_pause(parser, 1)
            return 0
        }
    }

    fileprivate static func from(_ parser: UnsafeMutablePointer<http_parser>) -> HTTPReader? {
        guard let data = parser.pointee.data else { return nil }
        return Unmanaged<HTTPReader>.fromOpaque(data).takeUnretainedValue()
    }

    /// Feeds the next bytes (an empty buffer: the peer closed).
    package func feed(_ bytes: UnsafeRawBufferPointer) -> Outcome {
        if complete { return finished() }
        let consumed = withExtendedLifetime(self) { () -> Int in
            parser.data = Unmanaged.passUnretained(self).toOpaque()
            let base = bytes.baseAddress?.assumingMemoryBound(to: CChar.self)
            return http_parser_execute(&parser, &settings, base, bytes.count)
        }
        parser.data = nil
        if complete { return finished() }
        if bytes.isEmpty { return .bad(status: 400, message: "the request ended early") }
        if tooLarge {
            return .bad(
                status: 413,
                message: maximumBody == 0 ? "this request takes no body" : "request body over \(maximumBody) bytes"
            )
        }
        let errno = http_errno(rawValue: parser.http_errno)
        if errno != HPE_OK || consumed != bytes.count {
            let name = String(cString: http_errno_description(errno))
            return .bad(status: 400, message: "malformed HTTP request: \(name)")
        }
        return .needMore
    }

    package func feed(_ bytes: [UInt8]) -> Outcome { bytes.withUnsafeBytes { feed($0) } }

    private func finished() -> Outcome {
        if !isRequest { return .response(status: Int(parser.status_code), body: body) }
        let method = String(cString: http_method_str(http_method(rawValue: parser.method)))
        let target = String(decoding: url, as: UTF8.self)
        var path = Substring(target)
        var query: [String: String] = [:]
        if let mark = target.firstIndex(of: "?") {
            path = target[..<mark]
            for pair in target[target.index(after: mark)...].split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                query[percentDecoded(parts[0], plusIsSpace: true)] =
                    parts.count > 1 ? percentDecoded(parts[1], plusIsSpace: true) : ""
            }
        }
        return .request(HTTPRequest(method: method, path: percentDecoded(path), query: query, body: body))
    }
}

/// `%41` as `A`, `+` as a space in a query; a malformed escape stays as it is.
func percentDecoded(_ text: Substring, plusIsSpace: Bool = false) -> String {
    var bytes: [UInt8] = []
    var i = text.utf8.startIndex
    let utf8 = text.utf8
    while i < utf8.endIndex {
        let b = utf8[i]
        if b == UInt8(ascii: "%"), let h = utf8.index(i, offsetBy: 2, limitedBy: utf8.endIndex), h < utf8.endIndex,
            let value = UInt8(String(decoding: utf8[utf8.index(after: i)...h], as: UTF8.self), radix: 16)
        {
            bytes.append(value)
            i = utf8.index(after: h)
            continue
        }
        bytes.append(plusIsSpace && b == UInt8(ascii: "+") ? UInt8(ascii: " ") : b)
        i = utf8.index(after: i)
    }
    return String(decoding: bytes, as: UTF8.self)
}
