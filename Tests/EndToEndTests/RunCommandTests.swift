// `berth run` as a user runs it: the built binary, its printed lines, its exit codes.

import Glibc
import LinuxIO
import Mappings
import TestSupport
import XCTest

final class RunCommandTests: XCTestCase {
    /// Starts berth and waits for `lines` listener lines. Userspace mode: these tests run in the
    /// root namespace, whose nftables ruleset a test must never touch.
    private func start(_ arguments: [String], lines: Int, limits: [String] = []) throws -> (Subprocess, [String]) {
        let berth = berthBinary()
        let process =
            limits.isEmpty
            ? try Subprocess(berth, ["run", "--mode", "userspace"] + arguments)
            : try Subprocess("/usr/bin/prlimit", limits + ["--", berth, "run", "--mode", "userspace"] + arguments)
        let printed = process.waitForLines(lines)
        guard printed.count >= lines else {
            throw TestFailure("berth printed \(printed) (stderr: \(process.stderr))")
        }
        return (process, printed)
    }

    private func port(of line: String) -> UInt16 { UInt16(line.split(separator: ":").last!)! }

    private func assertEcho(_ host: String, _ port: UInt16, file: StaticString = #filePath, line: UInt = #line) throws {
        let client = try TestSocket.connect(SocketAddress(ip: host, port: port)!)
        try client.send("ping \(host)")
        XCTAssertEqual(
            String(decoding: try client.receive(exactly: 5 + host.utf8.count), as: UTF8.self),
            "ping \(host)",
            file: file,
            line: line
        )
    }

    func testFixedPortOnAllAddressesPrintsBothFamiliesAndForwards() throws {
        let server = try TestServer.echo()
        let host = freePort()
        let (berth, lines) = try start(["-p", "\(host):\(server.address.port)", "127.0.0.1"], lines: 2)
        XCTAssertEqual(
            lines,
            ["\(server.address.port)/tcp -> 0.0.0.0:\(host)", "\(server.address.port)/tcp -> [::]:\(host)"]
        )
        try assertEcho("127.0.0.1", host)
        try assertEcho("::1", host)
        berth.signal(SIGTERM)
        XCTAssertEqual(berth.waitForExit(), 0)
        XCTAssertEqual(berth.stderr, "")
    }

    func testEphemeralPortIsReportedAndServesBothFamilies() throws {
        let server = try TestServer.echo()
        let c = server.address.port
        let (berth, lines) = try start(["-p", "\(c)", "127.0.0.1"], lines: 2)
        XCTAssertTrue(lines[0].hasPrefix("\(c)/tcp -> 0.0.0.0:"), lines[0])
        XCTAssertTrue(lines[1].hasPrefix("\(c)/tcp -> [::]:"), lines[1])
        let p = port(of: lines[0])
        XCTAssertEqual(p, port(of: lines[1]), "both families get the same ephemeral port, as with Docker")
        XCTAssertNotEqual(p, 0)
        try assertEcho("127.0.0.1", p)
        try assertEcho("::1", p)
        berth.signal(SIGINT)
        XCTAssertEqual(berth.waitForExit(), 0)
    }

    func testOneHostAddressFixedAndEphemeral() throws {
        let server = try TestServer.echo()
        let c = server.address.port
        let fixed = freePort()
        let (berth, lines) = try start(
            ["-p", "127.0.0.1:\(fixed):\(c)", "-p", "127.0.0.1::\(c)", "127.0.0.1"],
            lines: 2
        )
        XCTAssertEqual(lines[0], "\(c)/tcp -> 127.0.0.1:\(fixed)")
        XCTAssertTrue(lines[1].hasPrefix("\(c)/tcp -> 127.0.0.1:"))
        try assertEcho("127.0.0.1", fixed)
        try assertEcho("127.0.0.1", port(of: lines[1]))
        // Bound to 127.0.0.1 only: not on ::1.
        XCTAssertThrowsError(try TestSocket.connect(SocketAddress(ip: "::1", port: fixed)!))
        berth.signal(SIGTERM)
        XCTAssertEqual(berth.waitForExit(), 0)
    }

    func testIPv6HostAddressToIPv4Target() throws {
        let server = try TestServer.echo()
        let fixed = freePort()
        let (berth, lines) = try start(["-p", "[::1]:\(fixed):\(server.address.port)", "127.0.0.1"], lines: 1)
        XCTAssertEqual(lines, ["\(server.address.port)/tcp -> [::1]:\(fixed)"])
        try assertEcho("::1", fixed)
        berth.signal(SIGTERM)
        XCTAssertEqual(berth.waitForExit(), 0)
    }

    func testIPv4HostAddressToIPv6Target() throws {
        let server = try TestServer.echo(host: "::1")
        let (berth, lines) = try start(["-p", "127.0.0.1::\(server.address.port)", "::1"], lines: 1)
        try assertEcho("127.0.0.1", port(of: lines[0]))
        berth.signal(SIGTERM)
        XCTAssertEqual(berth.waitForExit(), 0)
    }

    func testPortRangesMapPairwise() throws {
        let c = freePortPair()
        let a = try TestServer(port: c) { s in
            try? s.send("A")
            s.close()
        }
        let b = try TestServer(port: c + 1) { s in
            try? s.send("B")
            s.close()
        }
        let h = freePortPair()
        let spec = "127.0.0.1:\(h)-\(h + 1):\(a.address.port)-\(a.address.port + 1)"
        let (berth, lines) = try start(["-p", spec, "127.0.0.1"], lines: 2)
        XCTAssertEqual(
            lines,
            ["\(a.address.port)/tcp -> 127.0.0.1:\(h)", "\(b.address.port)/tcp -> 127.0.0.1:\(h + 1)"]
        )
        XCTAssertEqual(try TestSocket.connect(SocketAddress(ip: "127.0.0.1", port: h)!).receiveAll(), Array("A".utf8))
        XCTAssertEqual(
            try TestSocket.connect(SocketAddress(ip: "127.0.0.1", port: h + 1)!).receiveAll(),
            Array("B".utf8)
        )
        berth.signal(SIGTERM)
        XCTAssertEqual(berth.waitForExit(), 0)
    }

    func testHostRangeToOnePortTakesAFreeOne() throws {
        let server = try TestServer.echo()
        let h = freePort()
        // The first port of the range is taken: berth must move on to the next.
        let blocker = try TestServer(port: h) { _ in }
        let (berth, lines) = try start(["-p", "127.0.0.1:\(h)-\(h + 5):\(server.address.port)", "127.0.0.1"], lines: 1)
        let got = port(of: lines[0])
        XCTAssertTrue(got > h && got <= h + 5, "got \(got), range \(h)-\(h + 5)")
        try assertEcho("127.0.0.1", got)
        blocker.stop()
        berth.signal(SIGTERM)
        XCTAssertEqual(berth.waitForExit(), 0)
    }

    func testUDPPortsOnBothFamiliesAndTheUDPOptions() throws {
        let server = try TestUDPEchoServer()
        let c = server.address.port
        let (berth, lines) = try start(
            ["--udp-timeout", "30", "--udp-max-flows", "64", "-p", "\(c)/udp", "127.0.0.1"],
            lines: 2
        )
        XCTAssertTrue(lines[0].hasPrefix("\(c)/udp -> 0.0.0.0:"), lines[0])
        XCTAssertTrue(lines[1].hasPrefix("\(c)/udp -> [::]:"), lines[1])
        for host in ["127.0.0.1", "::1"] {
            let client = try TestUDPSocket(host: host == "::1" ? "::1" : "127.0.0.1")
            try client.send(Array("udp via \(host)".utf8), to: SocketAddress(ip: host, port: port(of: lines[0]))!)
            let (bytes, from) = try client.receiveFrom()
            XCTAssertEqual(String(decoding: bytes, as: UTF8.self), "udp via \(host)")
            XCTAssertEqual(from.ipText, host, "the reply comes from the address the client sent to")
        }
        berth.signal(SIGTERM)
        XCTAssertEqual(berth.waitForExit(), 0)
    }

    /// Regression: splice(2) raises SIGPIPE when the target is gone; berth must reset the client and live.
    func testBackendThatClosesWhileTheClientSendsDoesNotKillBerth() throws {
        let server = try TestServer { socket in socket.close() }
        let (berth, lines) = try start(["-p", "127.0.0.1::\(server.address.port)", "127.0.0.1"], lines: 1)
        let address = SocketAddress(ip: "127.0.0.1", port: port(of: lines[0]))!
        for _ in 0..<5 {
            let client = try TestSocket.connect(address)
            let chunk = [UInt8](repeating: 0x42, count: 1 << 20)
            for _ in 0..<8 { if (try? client.send(chunk)) == nil { break } }
            client.close()
        }
        XCTAssertNil(berth.waitForExit(seconds: 0.5), "berth died: \(berth.stderr)")
        berth.signal(SIGTERM)
        XCTAssertEqual(berth.waitForExit(), 0)
    }

    func testSeveralLoopsShareTheListeners() throws {
        let server = try TestServer.echo()
        let (berth, lines) = try start(
            [
                "--threads", "3", "-p", "127.0.0.1::\(server.address.port)", "-p",
                "127.0.0.1::\(server.address.port)/udp", "127.0.0.1",
            ],
            lines: 2
        )
        let address = SocketAddress(ip: "127.0.0.1", port: port(of: lines[0]))!
        var clients: [TestSocket] = []
        for i in 0..<300 {
            let c = try TestSocket.connect(address)
            try c.send("client \(i);")
            clients.append(c)
        }
        for (i, c) in clients.enumerated() {
            XCTAssertEqual(
                String(decoding: try c.receive(exactly: "client \(i);".utf8.count), as: UTF8.self),
                "client \(i);"
            )
        }
        clients.removeAll()
        // Each loop has its own listener per mapping: 3 loops, 2 mappings.
        XCTAssertTrue(
            eventually { openSocketCount(pid: berth.pid) == 6 },
            "\(openSocketCount(pid: berth.pid)) sockets: the six listeners only"
        )
        berth.signal(SIGTERM)
        XCTAssertEqual(berth.waitForExit(), 0)
        XCTAssertEqual(berth.stderr, "")
    }

    /// With several loops a port is a group of SO_REUSEPORT sockets; a second berth asking for
    /// it must still hear "address already in use", not quietly join the group.
    func testASecondBerthOnTheSamePortGetsAddressInUse() throws {
        let server = try TestServer.echo()
        let host = freePort()
        let spec = "127.0.0.1:\(host):\(server.address.port)"
        let (first, _) = try start(["--threads", "2", "-p", spec, "-p", "\(spec)/udp", "127.0.0.1"], lines: 2)
        for proto in ["tcp", "udp"] {
            let second = try Subprocess.run(
                berthBinary(),
                ["run", "--mode", "userspace", "--threads", "2", "-p", "\(spec)/\(proto)", "127.0.0.1"]
            )
            XCTAssertEqual(second.code, 1)
            XCTAssertEqual(
                second.stderr,
                "berth: \(server.address.port)/\(proto): bind 127.0.0.1:\(host): address already in use\n"
            )
        }
        try assertEcho("127.0.0.1", host)
        first.signal(SIGTERM)
        XCTAssertEqual(first.waitForExit(), 0)
    }

    func testMalformedSpecIsOneLineAndExitTwo() throws {
        for (spec, message) in [
            (
                "300.1.1.1:80:80",
                "berth: invalid port spec \"300.1.1.1:80:80\": host IP \"300.1.1.1\" is not an IPv4 or IPv6 address\n"
            ),
            ("8080:", nil), ("80/xyz", nil), ("90-80:90-80", nil), ("8000-8002:80-81", nil), ("70000:80", nil),
            ("0:0", nil),
        ] {
            let result = try Subprocess.run(berthBinary(), ["run", "-p", spec, "127.0.0.1"])
            XCTAssertEqual(result.code, 2, spec)
            XCTAssertEqual(result.stdout, "", spec)
            XCTAssertEqual(result.stderr.filter { $0 == "\n" }.count, 1, "one line for \(spec): \(result.stderr)")
            XCTAssertTrue(result.stderr.hasPrefix("berth: invalid port spec \"\(spec)\": "), result.stderr)
            if let message { XCTAssertEqual(result.stderr, message) }
        }
    }

    func testBadTargetAddress() throws {
        let result = try Subprocess.run(berthBinary(), ["run", "-p", "80", "localhost"])
        XCTAssertEqual(result.code, 2)
        XCTAssertEqual(result.stderr, "berth: target IP \"localhost\" is not an IPv4 or IPv6 address\n")
    }

    func testPortInUseFailsWholeAndLeavesNothingListening() throws {
        let busy = try TestServer { _ in }
        let first = freePort()
        let result = try Subprocess.run(
            berthBinary(),
            [
                "run", "--mode", "userspace", "-p", "127.0.0.1:\(first):80", "-p", "127.0.0.1:\(busy.address.port):80",
                "127.0.0.1",
            ]
        )
        XCTAssertEqual(result.code, 1)
        XCTAssertEqual(result.stdout, "", "no listener is reported when start-up fails")
        XCTAssertEqual(result.stderr, "berth: 80/tcp: bind 127.0.0.1:\(busy.address.port): address already in use\n")
        // The first port was bound and must be free again: we can bind it ourselves.
        XCTAssertNoThrow(try TestServer(port: first) { _ in }.stop())
    }

    func testPrivilegedPortWithoutPermission() throws {
        guard isRoot, access("/usr/bin/setpriv", X_OK) == 0 else {
            throw XCTSkip("needs root to drop to an unprivileged user with setpriv")
        }
        let result = try Subprocess.run(
            "/usr/bin/setpriv",
            [
                "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", berthBinary(), "run", "--mode",
                "userspace", "-p", "127.0.0.1:81:80", "127.0.0.1",
            ]
        )
        XCTAssertEqual(result.code, 1)
        XCTAssertEqual(
            result.stderr,
            "berth: 80/tcp: bind 127.0.0.1:81: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)\n"
        )
    }

    func testSigtermClosesEstablishedConnections() throws {
        let server = try TestServer.echo()
        let (berth, lines) = try start(["-p", "127.0.0.1::\(server.address.port)", "127.0.0.1"], lines: 1)
        let client = try TestSocket.connect(SocketAddress(ip: "127.0.0.1", port: port(of: lines[0]))!)
        try client.send("x")
        _ = try client.receive(exactly: 1)
        berth.signal(SIGTERM)
        XCTAssertEqual(berth.waitForExit(), 0)
        let outcome = client.receiveOutcome()
        XCTAssertTrue(outcome.bytes.isEmpty, "the connection ends when berth stops")
    }

    func testBadCommandLineIsOneLineAndExitTwo() throws {
        for (arguments, message) in [
            (["run", "--bogus", "-p", "80", "127.0.0.1"], #"unknown option "--bogus""#),
            (["run", "-p", "80", "127.0.0.1", "--threads"], "missing value for --threads"),
            (
                ["run", "-p", "80", "--threads", "two", "127.0.0.1"],
                #"invalid value "two" for --threads: must be a whole number"#
            ),
            (["run", "-p", "80", "--threads", "0", "127.0.0.1"], "--threads must be between 1 and 1024"),
            (["run", "-p", "80"], "missing the target IP, the container's address"),
            (["run", "127.0.0.1"], "nothing to publish: give at least one -p"),
        ] {
            let result = try Subprocess.run(berthBinary(), arguments)
            XCTAssertEqual(result.code, 2, "\(arguments)")
            XCTAssertEqual(result.stdout, "", "\(arguments)")
            XCTAssertEqual(result.stderr, "berth: \(message)\n", "\(arguments)")
        }
    }

    func testNoCommandOrAnUnknownOneShowsTheUsageAndExitsTwo() throws {
        for (arguments, first) in [([], "USAGE: berth run "), (["start"], #"berth: unknown command "start""#)] {
            let result = try Subprocess.run(berthBinary(), arguments)
            XCTAssertEqual(result.code, 2, "\(arguments)")
            XCTAssertEqual(result.stdout, "", "\(arguments)")
            XCTAssertTrue(result.stderr.hasPrefix(first), result.stderr)
            XCTAssertTrue(result.stderr.contains("berth --help"), result.stderr)
        }
    }

    func testVersion() throws {
        for arguments in [["--version"], ["run", "--version"]] {
            let result = try Subprocess.run(berthBinary(), arguments)
            XCTAssertEqual(result.code, 0, "\(arguments)")
            XCTAssertEqual(result.stdout, BerthVersion.line() + "\n", "\(arguments)")
            XCTAssertEqual(result.stderr, "", "\(arguments)")
        }
    }

    func testHelpExplainsTheGrammarWithDockersExamples() throws {
        for args in [["--help"], ["-h"], ["help"]] {
            let result = try Subprocess.run(berthBinary(), args)
            XCTAssertEqual(result.code, 0)
            XCTAssertEqual(result.stderr, "")
            for example in ["-p 80:80", "-p 80 ", "-p 127.0.0.1:80:80", "[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]"]
            {
                XCTAssertTrue(result.stdout.contains(example), "berth \(args) lacks \(example)")
            }
        }
        for args in [["run", "--help"], ["run", "-h"], ["help", "run"], ["run", "-p", "80", "--help"]] {
            let result = try Subprocess.run(berthBinary(), args)
            XCTAssertEqual(result.code, 0)
            XCTAssertEqual(result.stderr, "")
            XCTAssertTrue(result.stdout.contains("80/tcp -> 0.0.0.0:49153"), "berth \(args)")
            XCTAssertTrue(result.stdout.contains("--udp-max-flows <n>"), "berth \(args)")
        }
    }

    func testRunningOutOfDescriptorsPausesAcceptAndRecovers() throws {
        guard access("/usr/bin/prlimit", X_OK) == 0 else { throw XCTSkip("prlimit (util-linux) is not installed") }
        let server = try TestServer.echo()
        // 40 descriptors: a few for berth itself, then room for about 15 connections (2 sockets each).
        let (berth, lines) = try start(
            ["--threads", "1", "-p", "127.0.0.1::\(server.address.port)", "127.0.0.1"],
            lines: 1,
            limits: ["--nofile=40:40"]
        )
        let p = port(of: lines[0])
        var held: [TestSocket] = []
        for _ in 0..<30 { held.append(try TestSocket.connect(SocketAddress(ip: "127.0.0.1", port: p)!)) }
        // Some are served, the rest wait in the backlog while berth pauses accepting.
        XCTAssertTrue(
            eventually {
                berth.waitForLines(99, seconds: 0.05)
                return berth.stderr.contains("pausing accept")
            },
            berth.stderr
        )
        XCTAssertNil(berth.waitForExit(seconds: 0.5), "berth must survive EMFILE")
        held.removeAll()
        // The clients that waited in the backlog are accepted and wound down; then every new client is served.
        XCTAssertTrue(
            eventually { openSocketCount(pid: berth.pid) == 1 },
            "berth holds \(openSocketCount(pid: berth.pid)) sockets"
        )
        for _ in 0..<20 { try assertEcho("127.0.0.1", p) }
        XCTAssertEqual(
            berth.stderr.components(separatedBy: "pausing accept").count - 1,
            1,
            "logged once:\n\(berth.stderr)"
        )
        berth.signal(SIGTERM)
        XCTAssertEqual(berth.waitForExit(), 0)
    }

    /// `-p 9278-47650` is 76,746 listeners: refused before binding any (it used to bind 20,000 over
    /// six seconds, then fail on EMFILE). prlimit sets soft and hard limit alike, so there is nothing
    /// to raise.
    func testMoreListenersThanTheDescriptorLimitAreRefusedBeforeBinding() throws {
        guard access("/usr/bin/prlimit", X_OK) == 0 else { throw XCTSkip("prlimit (util-linux) is not installed") }
        for (threads, message) in [
            ("1", "berth: 76746 listening sockets need 76765 file descriptors, the limit is 64 (ulimit -n)\n"),
            ("2", "berth: 153492 listening sockets need 153514 file descriptors, the limit is 64 (ulimit -n)\n"),
        ] {
            let result = try Subprocess.run(
                "/usr/bin/prlimit",
                [
                    "--nofile=64:64", "--", berthBinary(), "run", "--mode", "userspace", "--threads", threads,
                    "-p", "9278-47650", "127.0.0.1",
                ]
            )
            XCTAssertEqual(result.code, 1, result.stderr)
            XCTAssertEqual(result.stdout, "", "nothing is bound, so no listener is reported")
            XCTAssertEqual(result.stderr, message)
        }
    }

    /// berth raises its soft limit to the hard one before it counts: 20 listeners (39 descriptors with
    /// the reserve) fit in a hard limit of 4096 though the soft limit is 24.
    func testSoftDescriptorLimitIsRaisedToTheHardLimit() throws {
        guard access("/usr/bin/prlimit", X_OK) == 0 else { throw XCTSkip("prlimit (util-linux) is not installed") }
        let server = try TestServer.echo()
        let specs = (0..<20).flatMap { _ in ["-p", "127.0.0.1::\(server.address.port)"] }
        let (berth, lines) = try start(
            ["--threads", "1"] + specs + ["127.0.0.1"],
            lines: 20,
            limits: ["--nofile=24:4096"]
        )
        XCTAssertEqual(lines.count, 20)
        // "Max open files            4096                 4096                 files"
        let limits = readText("/proc/\(berth.pid)/limits")
        let openFiles = limits.split(separator: "\n").first { $0.hasPrefix("Max open files") } ?? ""
        XCTAssertEqual(
            openFiles.split(separator: " ").dropFirst(3).prefix(2).map(String.init),
            ["4096", "4096"],
            limits
        )
        try assertEcho("127.0.0.1", port(of: lines[19]))
        berth.signal(SIGTERM)
        XCTAssertEqual(berth.waitForExit(), 0)
        XCTAssertEqual(berth.stderr, "")
    }

    func testSocketCountOfTheProcessReturnsToBaseline() throws {
        let server = try TestServer.echo()
        let (berth, lines) = try start(
            ["--threads", "2", "-p", "127.0.0.1::\(server.address.port)", "127.0.0.1"],
            lines: 1
        )
        let p = port(of: lines[0])
        try assertEcho("127.0.0.1", p)
        let baseline = 2  // a listener per loop, nothing else
        XCTAssertTrue(eventually { openSocketCount(pid: berth.pid) == baseline })
        for _ in 0..<500 { try assertEcho("127.0.0.1", p) }
        XCTAssertTrue(
            eventually { openSocketCount(pid: berth.pid) == baseline },
            "\(openSocketCount(pid: berth.pid)) sockets, baseline \(baseline)"
        )
        print("berth process sockets: baseline \(baseline), after 500 connections \(openSocketCount(pid: berth.pid))")
        berth.signal(SIGTERM)
        XCTAssertEqual(berth.waitForExit(), 0)
    }
}

/// The whole of a small file (a /proc file, whose size stat does not know).
private func readText(_ path: String) -> String {
    guard let file = fopen(path, "r") else { return "" }
    defer { fclose(file) }
    var text: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while case let n = fread(&buffer, 1, buffer.count, file), n > 0 { text += buffer[0..<n] }
    return String(decoding: text, as: UTF8.self)
}
