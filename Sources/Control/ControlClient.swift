// The daemon's client side, for `berth port`: one request over the control socket, one answer.

import Glibc
import JSON
import LinuxIO

public struct ControlError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public enum ControlClient {
    /// How long a request may take, connect to answer: a daemon that hangs must not hang its
    /// clients (a CNI runtime waits on berth-cni).
    public static let timeoutSeconds = 30

    private static func connect(
        _ socketPath: String,
        timeoutSeconds: Int = timeoutSeconds
    ) throws(ControlError)
        -> Descriptor
    {
        do {
            return try UnixSocket.connect(path: socketPath, timeoutSeconds: timeoutSeconds)
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
        socketPath: String,
        timeoutSeconds: Int = timeoutSeconds
    ) throws(ControlError) -> (status: Int, body: JSONValue?) {
        let socket = try connect(socketPath, timeoutSeconds: timeoutSeconds)
        let payload = Array((body?.serialized() ?? "").utf8)
        var head = "\(method) \(path) HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n"
        if body != nil { head += "Content-Type: application/json\r\n" }
        head += "Content-Length: \(payload.count)\r\n\r\n"
        let bytes = Array(head.utf8) + payload
        var sent = 0
        while sent < bytes.count {
            let result = bytes.withUnsafeBytes { raw in
                Result { () throws(SyscallError) in
                    try Socket.sendBlocking(socket, from: raw.baseAddress! + sent, count: raw.count - sent)
                }
            }
            switch result {
            case .success(let n): sent += n
            // The daemon may answer and close before it reads all (a refusal): read its answer.
            case .failure(let error) where error.errno == .brokenPipe || error.errno == .connectionReset:
                sent = bytes.count
            case .failure(let error): throw failure("sending to", socketPath, error, timeoutSeconds)
            }
        }
        let reader = HTTPReader(requests: false)
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let received = buffer.withUnsafeMutableBytes { raw in
                Result { () throws(SyscallError) in
                    try Socket.receiveBlocking(socket, into: raw.baseAddress!, count: raw.count)
                }
            }
            let n: Int
            switch received {
            case .success(let count): n = count
            case .failure(let error): throw failure("reading from", socketPath, error, timeoutSeconds)
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

    private static func failure(
        _ doing: String,
        _ socketPath: String,
        _ error: SyscallError,
        _ timeoutSeconds: Int
    )
        -> ControlError
    {
        if error.errno == .resourceTemporarilyUnavailable {
            return ControlError("the berth daemon on \(socketPath) did not answer within \(timeoutSeconds) s")
        }
        return ControlError("\(doing) \(socketPath): \(SyscallError.text(error.errno))")
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
