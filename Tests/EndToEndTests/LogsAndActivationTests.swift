// berth's logs where dockerd's /dev/null cannot swallow them (a file that logrotate renames and
// SIGHUP reopens, syslog's socket, BERTH_LOG in docker-proxy mode), and systemd socket activation
// (sockets passed as fd 3, 4, ... with LISTEN_FDS and LISTEN_PID, as systemd execs a service).

import Glibc
import LinuxIO
import TestSupport
import XCTest

final class LogsAndActivationTests: XCTestCase {
    private func port(of line: String) -> UInt16 { UInt16(line.split(separator: ":").last!)! }

    /// Connects to berth's port, whose container port nothing listens on: berth logs the refused
    /// connect at debug level, and resets the client.
    private func connectToNothing(_ port: UInt16) throws {
        let client = try TestSocket.connect(SocketAddress(ip: "127.0.0.1", port: port)!)
        _ = client.receiveOutcome()
    }

    private func lines(_ path: String) -> [String] {
        (readFile(path) ?? "").split(separator: "\n").map(String.init)
    }

    func testLogFileSurvivesARenameAndSIGHUPReopensIt() throws {
        let dir = try temporaryDirectory()
        let path = dir + "/berth.log"
        let closed = freePort()
        let berth = try Subprocess(
            berthBinary(),
            [
                "run", "--mode", "userspace", "--log-level", "debug", "--log-file", path, "-p", "127.0.0.1::\(closed)",
                "127.0.0.1",
            ]
        )
        let printed = berth.waitForLines(1)
        XCTAssertEqual(printed.count, 1, "stderr: \(berth.stderr)")
        let p = port(of: printed[0])
        var info = stat()
        XCTAssertEqual(stat(path, &info), 0)
        XCTAssertEqual(info.st_mode & 0o077, 0o040, "created 0640 (group may read, others not)")

        try connectToNothing(p)
        XCTAssertTrue(eventually { lines(path).contains { $0.contains("connection refused") } }, "\(lines(path))")
        // logrotate: rename, then SIGHUP.
        XCTAssertEqual(rename(path, path + ".1"), 0)
        berth.signal(SIGHUP)
        XCTAssertTrue(
            eventually { lines(path).contains { $0.hasSuffix("info berth[\(berth.pid)]: SIGHUP: reopened \(path)") } },
            "\(lines(path))"
        )
        try connectToNothing(p)
        XCTAssertTrue(eventually { lines(path).contains { $0.contains("connection refused") } }, "\(lines(path))")

        let old = lines(path + ".1")
        let new = lines(path)
        XCTAssertEqual(old.filter { $0.contains("connection refused") }.count, 1, "\(old)")
        // The relay's lines name their mapping, with the host port it got.
        let mapping = "mapping=127.0.0.1:\(p):127.0.0.1:\(closed)/tcp"
        XCTAssertTrue(old.contains { $0.contains("\(mapping) connect") && $0.contains("connection refused") }, "\(old)")
        XCTAssertEqual(new.filter { $0.contains("connection refused") }.count, 1, "\(new)")
        for line in old + new {
            // 2026-12-02T12:43:08.123456Z debug berth[4242]: connect 127.0.0.1:40000: connection refused
            let fields = line.split(separator: " ", maxSplits: 3).map(String.init)
            XCTAssertEqual(fields.count, 4, line)
            XCTAssertEqual(fields.first?.count, 27, line)
            XCTAssertEqual(fields.first?.last, "Z", line)
            XCTAssertEqual(fields.dropFirst(2).first, "berth[\(berth.pid)]:", line)
        }
        XCTAssertNil(berth.waitForExit(seconds: 0.2), "SIGHUP must not stop berth")
        berth.signal(SIGTERM)
        XCTAssertEqual(berth.waitForExit(), 0)
        XCTAssertEqual(berth.stderr, "", "the lines go to the file, not to stderr")
        XCTAssertTrue(
            lines(path).last?.hasSuffix("debug berth[\(berth.pid)]: signal 15: stopping") == true,
            "\(lines(path))"
        )
    }

    func testLogFileThatCannotBeOpenedIsOneLineAndExitOne() throws {
        let result = try Subprocess.run(
            berthBinary(),
            ["run", "--log-file", "/nonexistent-berth/b.log", "-p", "80", "127.0.0.1"]
        )
        XCTAssertEqual(result.code, 1)
        XCTAssertEqual(result.stdout, "")
        XCTAssertEqual(result.stderr, "berth: --log-file: open /nonexistent-berth/b.log: no such file or directory\n")
    }

    func testSyslogGetsRFC5424Lines() throws {
        let dir = try temporaryDirectory()
        let syslog = try TestUnixDatagramServer(path: dir + "/log")
        let closed = freePort()
        let berth = try Subprocess(
            berthBinary(),
            [
                "run", "--mode", "userspace", "--log-level", "debug", "--log-syslog-socket", syslog.path, "-p",
                "127.0.0.1::\(closed)", "127.0.0.1",
            ]
        )
        let printed = berth.waitForLines(1)
        XCTAssertEqual(printed.count, 1, "stderr: \(berth.stderr)")
        try connectToNothing(port(of: printed[0]))
        let line = try syslog.receive()
        // <31>1 2026-12-02T12:43:08.123456Z host berth 4242 - - mapping=... connect: connection refused
        let fields = line.split(separator: " ", maxSplits: 7).map(String.init)
        XCTAssertEqual(fields.count, 8, line)
        XCTAssertEqual(fields[0], "<31>1", "facility daemon (3), severity debug (7): \(line)")
        XCTAssertEqual(fields[1].count, 27, line)
        XCTAssertEqual(fields[2], hostname(), line)
        XCTAssertEqual(Array(fields[3...6]), ["berth", "\(berth.pid)", "-", "-"], line)
        XCTAssertTrue(fields[7].hasPrefix("mapping=127.0.0.1:") && fields[7].hasSuffix("connection refused"), line)
        berth.signal(SIGTERM)
        XCTAssertEqual(berth.waitForExit(), 0)
        XCTAssertEqual(berth.stderr, "")
    }

    /// dockerd passes no flags beyond docker-proxy's: BERTH_LOG says where lines go, and each line
    /// names the process's one mapping.
    func testDropInModeLogsWhereBERTH_LOGSays() throws {
        let dir = try temporaryDirectory()
        let path = dir + "/proxy.log"
        let syslog = try TestUnixDatagramServer(path: dir + "/log")
        let closed = freePort()
        let host = freePort()
        let flags = [
            "-proto", "tcp", "-host-ip", "127.0.0.1", "-host-port", "\(host)", "-container-ip", "127.0.0.1",
            "-container-port", "\(closed)",
        ]
        let environment =
            Subprocess.currentEnvironment() + [
                "BERTH_LOG=file:\(path),syslog:\(syslog.path),level=debug"
            ]
        let launch = try ProxyLaunch(flags, environment: environment)
        XCTAssertEqual(launch.readinessText(), "0\n", "stderr: \(launch.process.stderr)")
        let mapping = "mapping=127.0.0.1:\(host):127.0.0.1:\(closed)/tcp"
        let ready = try syslog.receive()
        XCTAssertTrue(
            ready.hasSuffix(" berth \(launch.process.pid) - - \(mapping) 127.0.0.1:\(host) -> 127.0.0.1:\(closed)"),
            ready
        )
        try connectToNothing(host)
        let datagram = try syslog.receive()
        XCTAssertTrue(datagram.hasPrefix("<31>1 "), datagram)
        XCTAssertTrue(datagram.contains(" berth \(launch.process.pid) - - \(mapping) connect"), datagram)
        XCTAssertTrue(
            eventually { lines(path).contains { $0.contains("berth[\(launch.process.pid)]: \(mapping) connect") } },
            "\(lines(path))"
        )
        // logrotate in this mode too.
        XCTAssertEqual(rename(path, path + ".1"), 0)
        launch.process.signal(SIGHUP)
        XCTAssertTrue(
            eventually {
                lines(path).contains {
                    $0.hasSuffix("info berth[\(launch.process.pid)]: \(mapping) SIGHUP: reopened \(path)")
                }
            },
            "\(lines(path))"
        )
        launch.process.signal(SIGINT)
        XCTAssertEqual(launch.process.waitForExit(), 0)
        XCTAssertEqual(launch.process.stderr, "")

        // A BERTH_LOG berth cannot use: one line on stderr, and on fd 3, which dockerd shows.
        let bad = try ProxyLaunch(flags, environment: Subprocess.currentEnvironment() + ["BERTH_LOG=file:relative.log"])
        let message = #"BERTH_LOG: "file:relative.log": the file must be an absolute path"#
        XCTAssertEqual(bad.readinessText(), "1\n\(message)")
        XCTAssertEqual(bad.process.waitForExit(), 2)
        XCTAssertEqual(bad.process.stderr, "berth: \(message)\n")

        // A failed start reaches the log as well as fd 3 (stderr is /dev/null under dockerd).
        let holder = try TestServer(port: host) { _ in }
        let taken = try ProxyLaunch(flags, environment: Subprocess.currentEnvironment() + ["BERTH_LOG=file:\(path)"])
        let failure = "\(closed)/tcp: bind 127.0.0.1:\(host): address already in use"
        XCTAssertEqual(taken.readinessText(), "1\n\(failure)")
        XCTAssertEqual(taken.process.waitForExit(), 1)
        XCTAssertTrue(
            lines(path).last?.hasSuffix("error berth[\(taken.process.pid)]: \(mapping) \(failure)") == true,
            "\(lines(path))"
        )
        holder.stop()
    }

    // MARK: socket activation

    /// Runs berth as systemd would: the sockets as fd 3, 4, ..., LISTEN_FDS, and LISTEN_PID set to
    /// the pid that execs berth (a shell's `$$` is the pid `exec` keeps), or to `listenPID`.
    private func activated(
        _ sockets: [Int32],
        names: String? = nil,
        listenPID: String? = nil,
        _ arguments: [String]
    ) throws -> Subprocess {
        var extra: [Int32: Int32] = [:]
        for (i, fd) in sockets.enumerated() { extra[3 + Int32(i)] = fd }
        var environment =
            Subprocess.currentEnvironment().filter { !$0.hasPrefix("LISTEN_") } + ["LISTEN_FDS=\(sockets.count)"]
        if let names { environment.append("LISTEN_FDNAMES=\(names)") }
        let pid = listenPID ?? "$$"
        return try Subprocess(
            "/bin/sh",
            ["-c", "export LISTEN_PID=\(pid); exec \"$0\" \"$@\"", berthBinary(), "run", "--mode", "userspace"]
                + arguments,
            extraFDs: extra,
            environment: environment
        )
    }

    func testSocketActivationServesThePassedSocketsAndBindsNothing() throws {
        let server = try TestServer.echo()
        let udpServer = try TestUDPEchoServer()
        let tcp = try dockerdSocket("127.0.0.1")
        let udp = try dockerdSocket("127.0.0.1", udp: true)
        defer {
            close(tcp.fd)
            close(udp.fd)
        }
        let berth = try activated(
            [tcp.fd, udp.fd],
            names: "web:dns",
            [
                "--threads", "2", "-p", "127.0.0.1:\(udp.port):\(udpServer.address.port)/udp",
                "-p", "127.0.0.1:\(tcp.port):\(server.address.port)", "127.0.0.1",
            ]
        )
        let printed = berth.waitForLines(2)
        XCTAssertEqual(
            printed,
            [
                "\(udpServer.address.port)/udp -> 127.0.0.1:\(udp.port)",
                "\(server.address.port)/tcp -> 127.0.0.1:\(tcp.port)",
            ],
            "stderr: \(berth.stderr)"
        )
        for i in 0..<10 {
            let client = try TestSocket.connect(SocketAddress(ip: "127.0.0.1", port: tcp.port)!)
            try client.send("activated \(i)")
            XCTAssertEqual(
                String(decoding: try client.receive(exactly: "activated \(i)".utf8.count), as: UTF8.self),
                "activated \(i)"
            )
        }
        let client = try TestUDPSocket(host: "127.0.0.1")
        try client.send(Array("datagram".utf8), to: SocketAddress(ip: "127.0.0.1", port: udp.port)!)
        XCTAssertEqual(String(decoding: try client.receiveFrom().bytes, as: UTF8.self), "datagram")
        // Its sockets, once the TCP clients are gone: the two it was passed and its UDP flow's, no
        // listener of its own (--threads 2 would bind one per loop).
        let passed = Set([socketInode(nil, tcp.fd), socketInode(nil, udp.fd)])
        XCTAssertTrue(eventually { openSocketCount(pid: berth.pid) == 3 }, "\(openSocketCount(pid: berth.pid)) sockets")
        XCTAssertEqual(Set((3..<5).map { socketInode(berth.pid, $0) }), passed, "fd 3 and 4 are the passed sockets")
        XCTAssertFalse(passed.contains(nil))
        for fd in 3..<5 {
            // fdinfo's flags are octal: O_CLOEXEC 02000000 (sd_listen_fds sets it), O_NONBLOCK 04000 (adopted).
            let flags = (readFile("/proc/\(berth.pid)/fdinfo/\(fd)") ?? "").split(separator: "\n")
                .first { $0.hasPrefix("flags:") }.flatMap {
                    Int($0.dropFirst(6).trimmingPrefix(while: { $0 == " " || $0 == "\t" }), radix: 8)
                }
            XCTAssertEqual(flags.map { $0 & 0o2004000 }, 0o2004000, "fd \(fd): close-on-exec and non-blocking")
        }
        berth.signal(SIGTERM)
        XCTAssertEqual(berth.waitForExit(), 0)
        XCTAssertEqual(berth.stderr, "")
    }

    /// systemd's `ListenStream=8080`: one dual-stack `[::]:8080` socket, which serves both families
    /// of `-p 8080:80` (contrib/systemd/berth-web.socket).
    func testADualStackSocketServesAnAllAddressMapping() throws {
        let server = try TestServer.echo()
        let socket = try dockerdSocket("::", dualStack: true)
        defer { close(socket.fd) }
        let berth = try activated([socket.fd], ["-p", "\(socket.port):\(server.address.port)", "127.0.0.1"])
        XCTAssertEqual(
            berth.waitForLines(2),
            [
                "\(server.address.port)/tcp -> 0.0.0.0:\(socket.port)",
                "\(server.address.port)/tcp -> [::]:\(socket.port)",
            ],
            "stderr: \(berth.stderr)"
        )
        for host in ["127.0.0.1", "::1"] {
            let client = try TestSocket.connect(SocketAddress(ip: host, port: socket.port)!)
            try client.send("via \(host)")
            XCTAssertEqual(
                String(decoding: try client.receive(exactly: "via \(host)".utf8.count), as: UTF8.self),
                "via \(host)"
            )
        }
        XCTAssertTrue(eventually { openSocketCount(pid: berth.pid) == 1 }, "\(openSocketCount(pid: berth.pid)) sockets")
        berth.signal(SIGTERM)
        XCTAssertEqual(berth.waitForExit(), 0)
        XCTAssertEqual(berth.stderr, "")
    }

    func testSocketActivationRefusesASocketThatMatchesNoMapping() throws {
        let tcp = try dockerdSocket("127.0.0.1")
        defer { close(tcp.fd) }
        let other = tcp.port == 65535 ? tcp.port - 1 : tcp.port + 1
        let berth = try activated(
            [tcp.fd],
            ["-p", "127.0.0.1:\(tcp.port):80", "-p", "127.0.0.1:\(other):80", "127.0.0.1"]
        )
        XCTAssertEqual(berth.waitForExit(), 1)
        XCTAssertEqual(berth.stdout, "")
        XCTAssertEqual(
            berth.stderr,
            "berth: socket activation: 80/tcp: no socket was passed for 127.0.0.1:\(other) (started with LISTEN_FDS, berth binds nothing itself)\n"
        )
    }

    /// LISTEN_PID names another process (pid 1): the variables are not for berth, which binds the
    /// port itself, and finds it held by the socket it was not meant to take.
    func testListenPIDOfAnotherProcessIsIgnored() throws {
        let tcp = try dockerdSocket("127.0.0.1")
        defer { close(tcp.fd) }
        let berth = try activated([tcp.fd], listenPID: "1", ["-p", "127.0.0.1:\(tcp.port):80", "127.0.0.1"])
        XCTAssertEqual(berth.waitForExit(), 1)
        XCTAssertEqual(berth.stderr, "berth: 80/tcp: bind 127.0.0.1:\(tcp.port): address already in use\n")
    }

    /// `socket:[INODE]` of fd `fd` of `pid` (nil: this process).
    private func socketInode(_ pid: Int32?, _ fd: Int32) -> String? {
        guard let link = readLink("/proc/\(pid.map { "\($0)" } ?? "self")/fd/\(fd)"), link.hasPrefix("socket:") else {
            return nil
        }
        return link
    }

    private func hostname() -> String { ThisProcess.hostname }
}
