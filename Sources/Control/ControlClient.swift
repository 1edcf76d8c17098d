// The daemon's client side, for `berth port`: one request over the control socket, one answer.

import Glibc
import LinuxIO

public enum ControlClient {
    private static func connect(_ socketPath: String) throws(ControlError) -> Descriptor {
        do {
            return try UnixSocket.connect(path: socketPath)
        } catch {
            throw ControlError("no berth daemon answers on \(socketPath) (\(SyscallError.text(error.errno)))")
        }
    }

    /// Whether a daemon accepts connections on `socketPath` (nothing is sent).
    public static func answers(_ socketPath: String) -> Bool {
        (try? connect(socketPath)) != nil
    }

    /// Sends `method path` with `body` to the daemon at `socketPath`; returns its status and body.
    public static func request(
        _ method: String,
        _ path: String,
        body: JSONValue? = nil,
        socketPath: String
    ) throws(ControlError) -> (status: Int, body: JSONValue?) {
        let socket = try connect(socketPath)
        let payload = Array((body?.serialized() ?? "").utf8)
        var head = "\(method) \(path) HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n"
        if body != nil { head += "Content-Type: application/json\r\n" }
        head += "Content-Length: \(payload.count)\r\n\r\n"
        let bytes = Array(head.utf8) + payload
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { raw in
                Glibc.send(socket.raw, raw.baseAddress.map { $0 + sent }, raw.count - sent, Int32(MSG_NOSIGNAL))
            }
            if n < 0 {
                if errno == EINTR { continue }
                // The daemon may answer and close before it reads all (a refusal): read its answer.
                if errno == EPIPE || errno == ECONNRESET { break }
                throw ControlError("sending to \(socketPath): \(SyscallError.text(.init(rawValue: errno)))")
            }
            sent += n
        }
        let reader = HTTPReader(requests: false)
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let n = buffer.withUnsafeMutableBytes { raw in recv(socket.raw, raw.baseAddress, raw.count, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ControlError("reading from \(socketPath): \(SyscallError.text(.init(rawValue: errno)))")
            }
            switch buffer.withUnsafeBytes({ reader.feed(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }) {
            case .needMore:
                continue
            case .response(let status, let body):
                return (status, body.isEmpty ? nil : try? JSONValue.parse(body).get())
            case .bad(_, let message):
                throw ControlError("the daemon's answer does not parse: \(message)")
            case .request:
                throw ControlError("the daemon's answer does not parse")
            }
        }
    }

    /// `text` for a query value: every byte but letters, digits and `-._~` as `%XX`.
    public static func percentEncoded(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            let c = Character(Unicode.Scalar(byte))
            if c.isLetter && byte < 128 || c.isNumber && byte < 128 || "-._~".contains(c) {
                out.append(c)
            } else {
                let hex = String(byte, radix: 16, uppercase: true)
                out += "%" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return out
    }
}
