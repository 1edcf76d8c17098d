// berth's PROXY protocol headers read by an implementation that is not berth's: HAProxy with
// `accept-proxy`, from Debian's package (make test installs it). HAProxy logs the client
// address it learnt from the header; it must be the client's, not berth's.

import Glibc
import LinuxIO
import TestSupport
import XCTest

final class ProxyProtocolPeerTests: XCTestCase {
    private static let haproxy = "/usr/sbin/haproxy"

    /// HAProxy listening with accept-proxy on a free port, forwarding to `echo`, logging one raw
    /// line per connection to stdout: `client IP:PORT dst IP:PORT`.
    private func startHAProxy(echo: SocketAddress, host: String) throws -> (Subprocess, SocketAddress, String) {
        guard access(Self.haproxy, X_OK) == 0 else { throw XCTSkip("HAProxy is not installed (make test installs it)") }
        let port = freePort()
        let listen = SocketAddress(ip: host, port: port)!
        let directory = String(cString: mkdtemp(strdup("/tmp/berth-haproxy-XXXXXX")))
        let config = """
            global
                log stdout format raw local0
            defaults
                mode tcp
                log global
                timeout connect 5s
                timeout client 10s
                timeout server 10s
            frontend through_berth
                bind \(listen) accept-proxy
                log-format "client %ci:%cp dst %fi:%fp"
                default_backend echo
            backend echo
                server echo \(echo)

            """
        let path = directory + "/haproxy.cfg"
        let file = fopen(path, "w")
        fputs(config, file)
        fclose(file)
        let process = try Subprocess(Self.haproxy, ["-db", "-f", path])
        // Listening once the port cannot be bound (a probe connection would be logged, headerless).
        XCTAssertTrue(
            eventually {
                guard let probe = try? Socket.make(family: listen.family, type: Int32(SOCK_STREAM.rawValue)) else {
                    return false
                }
                return (try? Socket.bind(probe.raw, listen)) == nil
            },
            "HAProxy did not listen: \(process.stderr)"
        )
        return (process, listen, directory)
    }

    private func check(_ version: String, family host: String) throws {
        let echo = try TestServer.echo()
        let (haproxy, frontend, directory) = try startHAProxy(echo: echo.address, host: host)
        defer {
            haproxy.signal(SIGTERM)
            _ = haproxy.waitForExit()
            unlink(directory + "/haproxy.cfg")
            rmdir(directory)
        }
        let berth = try Subprocess(
            berthBinary(),
            [
                "run", "--mode", "userspace", "--proxy-protocol", version, "-p",
                "\(host == "::1" ? "[::1]" : host)::\(frontend.port)", host,
            ]
        )
        defer {
            berth.signal(SIGTERM)
            XCTAssertEqual(berth.waitForExit(), 0)
        }
        let lines = berth.waitForLines(1)
        let published = try XCTUnwrap(lines.first.flatMap { $0.split(separator: " ").last }.flatMap { String($0) })
        let port = try XCTUnwrap(UInt16(published.split(separator: ":").last ?? ""))
        let client = try TestSocket.connect(SocketAddress(ip: host, port: port)!)
        let me = try Socket.localAddress(client.fd)
        try client.send("through berth and HAProxy")
        XCTAssertEqual(String(decoding: try client.receive(exactly: 25), as: UTF8.self), "through berth and HAProxy")
        client.close()
        let before = haproxy.stdoutLines.count
        _ = haproxy.waitForLines(before + 1, seconds: 10)
        let logged = haproxy.stdoutLines.last { $0.hasPrefix("client ") } ?? ""
        print("HAProxy logged, through berth --proxy-protocol \(version): \(logged)")
        XCTAssertEqual(
            logged,
            "client \(me.ipText):\(me.port) dst \(host):\(port)",
            "HAProxy's stdout: \(haproxy.stdoutLines)"
        )
    }

    func testHAProxyLogsTheClientsIPv4AddressFromVersionOne() throws { try check("v1", family: "127.0.0.1") }
    func testHAProxyLogsTheClientsIPv4AddressFromVersionTwo() throws { try check("v2", family: "127.0.0.1") }
    func testHAProxyLogsTheClientsIPv6AddressFromVersionOne() throws { try check("v1", family: "::1") }
    func testHAProxyLogsTheClientsIPv6AddressFromVersionTwo() throws { try check("v2", family: "::1") }
}
