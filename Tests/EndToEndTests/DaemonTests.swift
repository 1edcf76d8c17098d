// `berth daemon` and `berth port` as an engine would use them: the built binary, its control
// socket, ports added and removed while bytes move.

import Control
import Glibc
import JSON
import LinuxIO
import Synchronization
import TestSupport
import XCTest

final class DaemonTests: XCTestCase {
    private var directory = ""
    private var socketPath: String { directory + "/berth.sock" }

    override func setUp() {
        directory = String(cString: mkdtemp(strdup("/tmp/berth-daemon-XXXXXX")))
    }

    override func tearDown() {
        unlink(socketPath)
        rmdir(directory)
    }

    /// Starts the daemon and waits for its report: a line per initial port, then the socket.
    private func startDaemon(_ extra: [String] = [], ports: Int = 0) throws -> Subprocess {
        let daemon = try Subprocess(
            berthBinary(),
            // The tests' backends listen on loopback, which the API refuses without this.
            [
                "daemon", "--mode", "userspace", "--threads", "2", "--control", socketPath, "--allow-target",
                "127.0.0.0/8",
            ]
                + extra
        )
        let lines = daemon.waitForLines(ports + 1)
        guard lines.last == "control \(socketPath)" else {
            throw TestFailure("daemon printed \(lines), stderr \(daemon.stderr)")
        }
        return daemon
    }

    private func port(_ args: [String]) throws -> (code: Int32?, stdout: String, stderr: String) {
        try Subprocess.run(berthBinary(), ["port"] + args + ["--control", socketPath])
    }

    private func echo(_ port: UInt16, _ text: String) throws {
        let c = try TestSocket.connect(SocketAddress(ip: "127.0.0.1", port: port)!)
        try c.send(text)
        XCTAssertEqual(String(decoding: try c.receive(exactly: text.utf8.count), as: UTF8.self), text)
    }

    func testPortAddListRemoveThroughTheClient() throws {
        let server = try TestServer.echo()
        let daemon = try startDaemon()
        let fixed = freePort()
        let added = try port([
            "add", "--owner", "web-1", "-p", "127.0.0.1:\(fixed):\(server.address.port)", "-p",
            "127.0.0.1::\(server.address.port)", "127.0.0.1",
        ])
        XCTAssertEqual(added.code, 0, added.stderr)
        let lines = added.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.first, "\(server.address.port)/tcp -> 127.0.0.1:\(fixed)")
        let ephemeral = try XCTUnwrap(UInt16(lines.last?.split(separator: ":").last ?? ""))
        try echo(fixed, "through a daemon's port")
        try echo(ephemeral, "and its ephemeral one")
        let listed = try port(["ls"])
        XCTAssertEqual(listed.stdout, lines.map { "1\tweb-1\t\($0)\n" }.joined())
        // A port in use: the same line berth run prints, exit 1.
        let clash = try port(["add", "-p", "127.0.0.1:\(fixed):80", "127.0.0.1"])
        XCTAssertEqual(clash.code, 1)
        XCTAssertEqual(clash.stderr, "berth: 80/tcp: bind 127.0.0.1:\(fixed): address already in use\n")
        let removed = try port(["rm", "--owner", "web-1"])
        XCTAssertEqual(removed.code, 0, removed.stderr)
        XCTAssertEqual(try port(["ls"]).stdout, "")
        XCTAssertTrue(
            eventually {
                (try? TestSocket.connect(SocketAddress(ip: "127.0.0.1", port: fixed)!, timeoutSeconds: 1)) == nil
            }
        )
        let missing = try port(["rm", "9"])
        XCTAssertEqual(missing.stderr, "berth: no ports with id 9\n")
        daemon.signal(SIGTERM)
        XCTAssertEqual(daemon.waitForExit(), 0)
        XCTAssertFalse(FileSystem.exists(socketPath), "the socket file is removed on the way out")
    }

    /// 1,000 adds and removes through the API while one connection moves bytes all along; the
    /// daemon's socket count is back to its baseline afterwards.
    func testAThousandAddsAndRemovesDisturbNobody() throws {
        let server = try TestServer.echo()
        let daemon = try startDaemon(["-p", "127.0.0.1::\(server.address.port)", "127.0.0.1"], ports: 1)
        let first = daemon.stdoutLines[0]
        let steady = try XCTUnwrap(UInt16(first.split(separator: ":").last ?? ""))
        let bystander = try TestSocket.connect(SocketAddress(ip: "127.0.0.1", port: steady)!)
        try bystander.send("warm")
        _ = try bystander.receive(exactly: 4)
        let baseline = openSocketCount(pid: daemon.pid)
        for i in 0..<1000 {
            let body = JSONValue.object([
                ("target", .string("127.0.0.1")),
                ("publish", .array([.string("127.0.0.1::\(server.address.port)"), .string("127.0.0.1::53/udp")])),
                ("owner", .string("c\(i)")),
            ])
            let added = try ControlClient.request("POST", "/v1/berth/ports", body: body, socketPath: socketPath)
            XCTAssertEqual(added.status, 201)
            let removed = try ControlClient.request("DELETE", "/v1/berth/ports?owner=c\(i)", socketPath: socketPath)
            XCTAssertEqual(removed.status, 200)
            if i % 100 == 0 {
                try bystander.send("still here \(i)")
                XCTAssertEqual(
                    String(decoding: try bystander.receive(exactly: "still here \(i)".utf8.count), as: UTF8.self),
                    "still here \(i)"
                )
            }
        }
        XCTAssertTrue(
            eventually { openSocketCount(pid: daemon.pid) <= baseline },
            "\(openSocketCount(pid: daemon.pid)) sockets, baseline \(baseline)"
        )
        daemon.signal(SIGTERM)
        XCTAssertEqual(daemon.waitForExit(), 0)
    }

    func testTheSocketFileIsGuarded() throws {
        let daemon = try startDaemon()
        defer {
            daemon.signal(SIGTERM)
            _ = daemon.waitForExit()
        }
        var info = stat()
        XCTAssertEqual(stat(socketPath, &info), 0)
        XCTAssertEqual(info.st_mode & 0o777, 0o660)
        // A second daemon on the same socket: it answers, so it is not stale.
        let second = try Subprocess.run(berthBinary(), ["daemon", "--mode", "userspace", "--control", socketPath])
        XCTAssertEqual(second.code, 1)
        XCTAssertEqual(second.stderr, "berth: another berth daemon answers on \(socketPath)\n")
        // A peer that is neither root, berth's user nor in --control-group: refused by SO_PEERCRED,
        // even with the file opened up.
        guard isRoot else { throw XCTSkip("the other-user check needs root to run a client as nobody") }
        chmod(socketPath, 0o666)
        chmod(directory, 0o755)
        let other = try Subprocess.run(
            "/usr/bin/setpriv",
            ["--reuid=65534", "--regid=65534", "--clear-groups", berthBinary(), "port", "ls", "--control", socketPath]
        )
        XCTAssertEqual(other.code, 1)
        XCTAssertEqual(
            other.stderr,
            "berth: permission denied: the control socket takes root, berth's own user or --control-group\n"
        )
    }

    func testAStaleSocketFileIsReplaced() throws {
        // A socket file nobody listens on, as a killed daemon leaves it.
        do { _ = try UnixSocket.listen(path: socketPath) }
        XCTAssertTrue(FileSystem.exists(socketPath))
        let daemon = try startDaemon()
        XCTAssertEqual(try ControlClient.request("GET", "/v1/info", socketPath: socketPath).status, 200)
        daemon.signal(SIGTERM)
        XCTAssertEqual(daemon.waitForExit(), 0)
    }

    /// With every descriptor held by a published port's clients (RLIMIT_NOFILE 64), one control
    /// request spun the control thread at 100% CPU, writing ~80,000 warnings a second, and timed
    /// out: the level-triggered listener woke again at once after each EMFILE. Now the request is
    /// answered through the reserve descriptor and the episode is one line.
    func testOutOfDescriptorsTheControlSocketAnswersAndDoesNotSpin() throws {
        let server = try TestServer.echo()
        let daemon = try Subprocess(
            "/bin/sh",
            [
                "-c", #"ulimit -n 64 && exec "$0" "$@""#, berthBinary(), "daemon", "--mode", "userspace", "--threads",
                "1",
                "--control", socketPath, "-p", "127.0.0.1::\(server.address.port)", "127.0.0.1",
            ]
        )
        let lines = daemon.waitForLines(2)
        guard lines.last == "control \(socketPath)" else { return XCTFail("daemon printed \(lines), \(daemon.stderr)") }
        let published = try XCTUnwrap(UInt16(lines[0].split(separator: ":").last ?? ""))
        var clients: [TestSocket] = []
        for _ in 0..<30 { clients.append(try TestSocket.connect(SocketAddress(ip: "127.0.0.1", port: published)!)) }
        XCTAssertTrue(eventually { openDescriptorCount(pid: daemon.pid) >= 64 }, "the daemon's descriptors ran out")
        let answer = try ControlClient.request("GET", "/v1/berth/ports", socketPath: socketPath, timeoutSeconds: 10)
        XCTAssertEqual(answer.status, 200)
        let again = try ControlClient.request("GET", "/v1/info", socketPath: socketPath, timeoutSeconds: 10)
        XCTAssertEqual(again.status, 200)
        clients.removeAll()
        daemon.signal(SIGTERM)
        XCTAssertEqual(daemon.waitForExit(), 0)
        let warnings = daemon.stderr.split(separator: "\n").filter { $0.contains("control socket") }
        XCTAssertLessThanOrEqual(warnings.count, 4, warnings.prefix(8).joined(separator: "\n"))
    }

    /// `GET /metrics` on the --metrics TCP listener counts the bytes sent, exactly, per mapping.
    func testMetricsCountTheBytesSent() throws {
        let server = try TestServer.echo()
        let metricsPort = freePort()
        let daemon = try startDaemon(["--metrics", "127.0.0.1:\(metricsPort)"])
        defer {
            daemon.signal(SIGTERM)
            XCTAssertEqual(daemon.waitForExit(), 0)
        }
        let added = try port(["add", "--owner", "m1", "-p", "127.0.0.1::\(server.address.port)", "127.0.0.1"])
        let published = try XCTUnwrap(UInt16(added.stdout.split(separator: ":").last?.dropLast() ?? ""))
        let payload = pattern(12_345, seed: 5)
        let c = try TestSocket.connect(SocketAddress(ip: "127.0.0.1", port: published)!)
        try c.send(payload)
        XCTAssertEqual(try c.receive(exactly: payload.count), payload)
        c.shutdownWrite()
        _ = try c.receiveAll()
        let scrape = { () throws -> String in
            let s = try TestSocket.connect(SocketAddress(ip: "127.0.0.1", port: metricsPort)!)
            try s.send("GET /metrics HTTP/1.1\r\nHost: berth\r\n\r\n")
            return String(decoding: try s.receiveAll(), as: UTF8.self)
        }
        let labels =
            "proto=\"tcp\",host_address=\"127.0.0.1\",host_port=\"\(published)\",target=\"127.0.0.1:\(server.address.port)\",owner=\"m1\""
        var text = ""
        XCTAssertTrue(
            eventually {
                text = (try? scrape()) ?? ""
                return text.contains("berth_tcp_bytes_total{\(labels),direction=\"to_client\"} 12345")
            },
            text
        )
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4"), text)
        XCTAssertTrue(text.contains("berth_tcp_bytes_total{\(labels),direction=\"to_backend\"} 12345"), text)
        XCTAssertTrue(text.contains("berth_tcp_connections_accepted_total{\(labels)} 1"), text)
        // Only /metrics is served there.
        let other = try TestSocket.connect(SocketAddress(ip: "127.0.0.1", port: metricsPort)!)
        try other.send("GET /v1/berth/ports HTTP/1.1\r\n\r\n")
        XCTAssertTrue(String(decoding: try other.receiveAll(), as: UTF8.self).hasPrefix("HTTP/1.1 404"))
    }

    /// A control client that connects and sends nothing, and one that sends half a request, hold
    /// no one up: forwarding goes on, other clients are answered, and the stuck ones get 408 when
    /// their time is up (the daemon's own thread and loop, bounded buffers).
    func testAStuckControlClientStallsNothing() throws {
        let server = try TestServer.echo()
        let daemon = try startDaemon(
            ["--client-timeout", "1", "-p", "127.0.0.1::\(server.address.port)", "127.0.0.1"],
            ports: 1
        )
        defer {
            daemon.signal(SIGTERM)
            XCTAssertEqual(daemon.waitForExit(), 0)
        }
        let published = try XCTUnwrap(UInt16(daemon.stdoutLines[0].split(separator: ":").last ?? ""))
        let silent = try UnixSocket.connect(path: socketPath)
        let half = try UnixSocket.connect(path: socketPath)
        let partial = Array("POST /v1/berth/ports HTTP/1.1\r\nContent-Length: 500\r\n\r\n{\"tar".utf8)
        _ = partial.withUnsafeBytes { Glibc.send(half.raw, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        for i in 0..<20 {
            try echo(published, "while two clients are stuck \(i)")
            XCTAssertEqual(try ControlClient.request("GET", "/v1/info", socketPath: socketPath).status, 200)
        }
        // Their answer, after the daemon's --client-timeout (1 s here): a timeout, then the close.
        var tv = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(half.raw, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { recv(half.raw, $0.baseAddress, $0.count, 0) }
        XCTAssertGreaterThan(n, 0)
        XCTAssertTrue(
            String(decoding: buffer.prefix(max(0, n)), as: UTF8.self).hasPrefix("HTTP/1.1 408 Request Timeout")
        )
        _ = silent
    }

    /// One add asks for PROXY protocol headers: its backend learns the client; the daemon's other
    /// ports send none.
    func testAnAddCanAskForProxyProtocolHeaders() throws {
        let heard = TestLines()
        let server = try TestServer { socket in
            var line: [UInt8] = []
            while !line.suffix(2).elementsEqual([13, 10]), let byte = try? socket.receive(max: 1), !byte.isEmpty {
                line += byte
            }
            heard.append(String(decoding: line, as: UTF8.self))
            try? socket.send("ok")
            socket.close()
        }
        let daemon = try startDaemon()
        defer {
            daemon.signal(SIGTERM)
            XCTAssertEqual(daemon.waitForExit(), 0)
        }
        let body = JSONValue.object([
            ("target", .string("127.0.0.1")), ("publish", .array([.string("127.0.0.1::\(server.address.port)")])),
            ("proxyProtocol", .string("v1")),
        ])
        let added = try ControlClient.request("POST", "/v1/berth/ports", body: body, socketPath: socketPath)
        XCTAssertEqual(added.status, 201)
        guard case .object(let entry)? = added.body,
            case .array(let ports)? = entry.first(where: { $0.0 == "ports" })?.1,
            case .object(let first)? = ports.first,
            case .number(let port)? = first.first(where: { $0.0 == "hostPort" })?.1
        else { return XCTFail("\(String(describing: added.body))") }
        let client = try TestSocket.connect(SocketAddress(ip: "127.0.0.1", port: UInt16(port))!)
        let me = try Socket.localAddress(client.fd)
        XCTAssertEqual(try client.receiveAll(), Array("ok".utf8))
        XCTAssertEqual(heard.lines, ["PROXY TCP4 127.0.0.1 127.0.0.1 \(me.port) \(Int(port))\r\n"])
        let bad = JSONValue.object([
            ("target", .string("127.0.0.1")), ("publish", .array([.string("80")])), ("proxyProtocol", .string("v3")),
        ])
        let refused = try ControlClient.request("POST", "/v1/berth/ports", body: bad, socketPath: socketPath)
        XCTAssertEqual(refused.status, 400)
        XCTAssertEqual(refused.body, .object([("message", .string(#"proxyProtocol must be "v1" or "v2""#))]))
    }

    /// What rootlesskit's client (rootlessctl, Docker's rootless port driver) sends, against the
    /// daemon itself: info, add, list, bytes through the port, remove.
    func testRootlessKitsClientSequenceAgainstTheDaemon() throws {
        let server = try TestServer.echo()
        let daemon = try startDaemon()
        defer {
            daemon.signal(SIGTERM)
            XCTAssertEqual(daemon.waitForExit(), 0)
        }
        XCTAssertEqual(try ControlClient.request("GET", "/v1/info", socketPath: socketPath).status, 200)
        let parent = freePort()
        let spec = JSONValue.object([
            ("proto", .string("tcp")), ("parentIP", .string("127.0.0.1")), ("parentPort", .number(Double(parent))),
            ("childIP", .string("127.0.0.1")), ("childPort", .number(Double(server.address.port))),
        ])
        let added = try ControlClient.request("POST", "/v1/ports", body: spec, socketPath: socketPath)
        XCTAssertEqual(added.status, 201)
        XCTAssertEqual(added.body, .object([("id", .number(1)), ("spec", spec)]))
        XCTAssertEqual(
            try ControlClient.request("GET", "/v1/ports", socketPath: socketPath).body,
            .array([added.body ?? .null])
        )
        try echo(parent, "through rootlesskit's API")
        let removed = try ControlClient.request("DELETE", "/v1/ports/1", socketPath: socketPath)
        XCTAssertEqual(removed.status, 200)
        XCTAssertNil(removed.body)
        XCTAssertEqual(try ControlClient.request("GET", "/v1/ports", socketPath: socketPath).body, .array([]))
    }

    /// rootlesskit's own client, Debian's rootlessctl (make test installs rootlesskit): `info`,
    /// `add-ports` in its usual form (no child address: it goes to --default-target) and with
    /// one, `list-ports`, a duplicate add's error and `remove-ports`. Without --default-target,
    /// the usual form is refused with a line that says how to set it.
    func testRootlessctlAgainstTheDaemon() throws {
        let rootlessctl = "/usr/bin/rootlessctl"
        guard access(rootlessctl, X_OK) == 0 else {
            throw XCTSkip("rootlessctl is not installed (make test installs Debian's rootlesskit)")
        }
        let ctl = { (args: [String]) throws -> (code: Int32?, stdout: String, stderr: String) in
            try Subprocess.run(rootlessctl, ["--socket", self.socketPath] + args)
        }
        let server = try TestServer.echo()
        do {
            let daemon = try startDaemon()
            let refused = try ctl(["add-ports", "127.0.0.1:\(freePort()):\(server.address.port)/tcp"])
            XCTAssertEqual(refused.code, 1)
            XCTAssertTrue(refused.stderr.contains("--default-target ADDRESS"), refused.stderr)
            daemon.signal(SIGTERM)
            XCTAssertEqual(daemon.waitForExit(), 0)
        }
        let daemon = try startDaemon(["--default-target", "127.0.0.1"])
        defer {
            daemon.signal(SIGTERM)
            XCTAssertEqual(daemon.waitForExit(), 0)
        }
        let info = try ctl(["info"])
        XCTAssertEqual(info.code, 0, info.stderr)
        XCTAssertTrue(info.stdout.contains("Port Driver: berth"), info.stdout)
        let (usual, named) = (freePort(), freePort())
        let first = try ctl(["add-ports", "127.0.0.1:\(usual):\(server.address.port)/tcp"])
        XCTAssertEqual(first.code, 0, first.stderr)
        XCTAssertEqual(first.stdout, "1\n")
        let second = try ctl(["add-ports", "127.0.0.1:\(named):127.0.0.2:\(server.address.port)/tcp"])
        XCTAssertEqual(second.code, 0, second.stderr)
        XCTAssertEqual(second.stdout, "2\n")
        try echo(usual, "rootlessctl's usual form")
        let list = try ctl(["list-ports"])
        XCTAssertEqual(list.code, 0, list.stderr)
        let rows = list.stdout.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        XCTAssertEqual(rows.count, 3, list.stdout)
        XCTAssertEqual(rows.dropFirst().first, ["1", "tcp", "127.0.0.1", "\(usual)", "\(server.address.port)"])
        XCTAssertEqual(rows.last, ["2", "tcp", "127.0.0.1", "\(named)", "127.0.0.2", "\(server.address.port)"])
        let duplicate = try ctl(["add-ports", "127.0.0.1:\(usual):\(server.address.port)/tcp"])
        XCTAssertEqual(duplicate.code, 1)
        XCTAssertTrue(
            duplicate.stderr.contains("\(server.address.port)/tcp: bind 127.0.0.1:\(usual): address already in use"),
            duplicate.stderr
        )
        let removed = try ctl(["remove-ports", "1", "2"])
        XCTAssertEqual(removed.code, 0, removed.stderr)
        XCTAssertEqual(try ctl(["list-ports"]).stdout.split(separator: "\n").count, 1)
    }
}

/// Lines a test server heard, from its threads.
final class TestLines: Sendable {
    private let stored = Mutex<[String]>([])
    func append(_ line: String) { stored.withLock { $0.append(line) } }
    var lines: [String] { stored.withLock { $0 } }
}
