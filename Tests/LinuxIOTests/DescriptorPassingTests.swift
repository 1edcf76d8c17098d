// SCM_RIGHTS over a unix socket, as a docker-proxy shim hands its socket to the daemon: the
// receiver owns what it gets (close-on-exec), and nothing passed beyond the first leaks.

import Glibc
import LinuxIO
import TestSupport
import XCTest

final class DescriptorPassingTests: XCTestCase {
    /// A connected pair of unix stream sockets, as raw numbers the test closes.
    private func pair() throws -> (Int32, Int32) {
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw TestFailure("socketpair: \(errnoText())")
        }
        addTeardownBlock {
            close(fds[0])
            close(fds[1])
        }
        return (fds[0], fds[1])
    }

    func testAPassedListenerArrivesWithTheBytesAndIsTheSameSocket() throws {
        let (a, b) = try pair()
        let listener = try Socket.make(family: AF_INET, type: Int32(SOCK_STREAM.rawValue))
        try Socket.bind(listener.raw, SocketAddress(ip: "127.0.0.1", port: 0)!)
        try Socket.listen(listener.raw, backlog: 4)
        let address = try Socket.localAddress(listener.raw)
        let text = Array("POST /v1/berth/shims".utf8)
        XCTAssertEqual(
            try text.withUnsafeBytes {
                try UnixSocket.send(a, from: $0.baseAddress!, count: $0.count, passing: [listener.raw])
            },
            text.count
        )
        var buffer = [UInt8](repeating: 0, count: 64)
        var received: Descriptor?
        let result = try buffer.withUnsafeMutableBytes { raw in
            try UnixSocket.receive(b, into: raw.baseAddress!, count: raw.count) { (d: consuming Descriptor) in
                received = .some(d)
            }
        }
        guard case .done(let n) = result else { return XCTFail("nothing arrived") }
        XCTAssertEqual(Array(buffer[..<n]), text)
        guard let got = received.take() else { return XCTFail("no descriptor came with the bytes") }
        XCTAssertNotEqual(got.raw, listener.raw)
        XCTAssertEqual(try Socket.localAddress(got.raw), address)
        XCTAssertEqual(fcntl(got.raw, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC)
    }

    func testOnlyTheFirstOfSeveralPassedDescriptorsIsKept() throws {
        let (a, b) = try pair()
        let before = openDescriptorCount()
        // Three in one message.
        let fds: [Int32] = [0, 1, 2].map { _ in dup(0) }
        defer { for fd in fds { close(fd) } }
        var byte: UInt8 = 7
        let sent = try UnixSocket.send(a, from: &byte, count: 1, passing: fds)
        XCTAssertEqual(sent, 1)
        var kept: [Int32] = []
        var buffer = [UInt8](repeating: 0, count: 8)
        _ = try buffer.withUnsafeMutableBytes { raw in
            try UnixSocket.receive(b, into: raw.baseAddress!, count: raw.count) { (d: consuming Descriptor) in
                kept.append(d.release())
            }
        }
        XCTAssertEqual(kept.count, 1)
        XCTAssertEqual(openDescriptorCount(), before + 3 + 1, "the three dups and the one kept; the other two closed")
        for fd in kept { close(fd) }
    }
}
