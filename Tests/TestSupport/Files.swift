// Files and unix datagram sockets for the tests of berth's logs.

import Glibc
import LinuxIO

/// A fresh directory under /tmp, removed by nobody (it is small and names the test run).
package func temporaryDirectory() throws -> String {
    var template = Array("/tmp/berth-test-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { throw TestFailure("mkdtemp: \(errnoText())") }
    return String(cString: made)
}

/// The whole file as text; nil if it cannot be read.
package func readFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(fd, &chunk, chunk.count)
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        bytes += chunk[0..<n]
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// A blocking unix socket of `type` bound at `path` (which must not exist), close-on-exec.
package func boundUnixSocket(_ path: String, type: __socket_type) throws -> Int32 {
    let fd = socket(AF_UNIX, Int32(type.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw TestFailure("socket: \(errnoText())") }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
    let rc = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
        }
    }
    guard rc == 0 else {
        let text = errnoText()
        close(fd)
        throw TestFailure("bind \(path): \(text)")
    }
    return fd
}

/// A unix datagram socket bound at `path`, as syslog's /dev/log is: it receives one message per
/// datagram. Binding removes whatever was at the path first (a syslog daemon that restarts does so).
package final class TestUnixDatagramServer {
    package let fd: Int32
    package let path: String

    package init(path: String) throws {
        unlink(path)
        fd = try boundUnixSocket(path, type: SOCK_DGRAM)
        self.path = path
        var tv = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    /// The next datagram as text; throws after 20 s without one.
    package func receive() throws -> String {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw TestFailure("recv \(path): \(errnoText())") }
            return String(decoding: buffer[0..<n], as: UTF8.self)
        }
    }
}
