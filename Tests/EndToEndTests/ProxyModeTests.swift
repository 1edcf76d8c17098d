// berth run the way dockerd runs its userland proxy (moby's daemon/libnetwork/portmapper/proxy_linux.go):
// docker-proxy's flags, a status pipe on fd 3 whose bytes are read to end of file, with -use-listen-fd a
// bound socket on fd 4, and SIGINT to stop it.

import Glibc
import LinuxIO
import Mappings
import TestSupport
import XCTest

/// dockerd's side of one proxy start: the read end of the status pipe, and the process.
final class ProxyLaunch {
    let process: Subprocess
    private let statusRead: Int32

    /// Starts `binary` with `arguments`, the write end of a fresh pipe as fd 3 (unless `statusPipe` is
    /// false, or `fd3` gives something else to put there) and `listenSocket` as fd 4.
    init(
        _ arguments: [String],
        listenSocket: Int32? = nil,
        statusPipe: Bool = true,
        fd3: Int32? = nil,
        binary: String = berthBinary(),
        environment: [String]? = nil
    ) throws {
        var extra: [Int32: Int32] = [:]
        var readEnd: Int32 = -1
        var writeEnd: Int32 = -1
        if statusPipe && fd3 == nil {
            var fds: [Int32] = [0, 0]
            guard pipe(&fds) == 0 else { throw TestFailure("pipe: \(errnoText())") }
            readEnd = aboveTen(fds[0])
            writeEnd = aboveTen(fds[1])
            extra[3] = writeEnd
        }
        if let fd3 { extra[3] = fd3 }
        if let listenSocket { extra[4] = listenSocket }
        defer { if writeEnd >= 0 { close(writeEnd) } }  // only berth holds the write end: EOF when it closes
        do {
            process = try Subprocess(binary, arguments, extraFDs: extra, environment: environment)
        } catch {
            if readEnd >= 0 { close(readEnd) }
            throw error
        }
        statusRead = readEnd
    }

    deinit { if statusRead >= 0 { close(statusRead) } }

    /// What berth wrote on fd 3, up to end of file (berth closed it, or exited); nil when neither came in
    /// `seconds`. dockerd reads two bytes and, unless they are "0\n", the rest to end of file.
    func readiness(seconds: Double = 20) -> [UInt8]? {
        var bytes: [UInt8] = []
        let deadline = Instant.now() + .milliseconds(Int(seconds * 1000))
        var chunk = [UInt8](repeating: 0, count: 4096)
        while Instant.now() < deadline {
            var p = pollfd(fd: statusRead, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 50) > 0 else { continue }
            let n = read(statusRead, &chunk, chunk.count)
            if n == 0 { return bytes }
            if n < 0 { if errno == EINTR { continue } else { return nil } }
            bytes += chunk[0..<n]
        }
        return nil
    }

    func readinessText(seconds: Double = 20) -> String? {
        readiness(seconds: seconds).map { String(decoding: $0, as: UTF8.self) }
    }
}

/// Moves a descriptor to 10 or above (close-on-exec), so that no dup onto 3 or 4 in the child can clobber
/// another descriptor meant for it.
func aboveTen(_ fd: Int32) -> Int32 {
    let moved = fcntl(fd, F_DUPFD_CLOEXEC, 10)
    close(fd)
    return moved
}

/// A socket as dockerd makes one for -use-listen-fd: blocking, bound, listening when TCP.
func dockerdSocket(
    _ ip: String,
    udp: Bool = false,
    dualStack: Bool = false,
    listen: Bool = true
) throws -> (fd: Int32, port: UInt16) {
    let address = SocketAddress(ip: ip, port: 0)!
    let type = udp ? Int32(SOCK_DGRAM.rawValue) : Int32(SOCK_STREAM.rawValue)
    let fd = aboveTen(socket(address.family, type | Int32(SOCK_CLOEXEC.rawValue), 0))
    guard fd >= 0 else { throw TestFailure("socket: \(errnoText())") }
    var one: Int32 = 1
    var v6only: Int32 = dualStack ? 0 : 1
    if !udp { setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, 4) }
    if address.isV6 { setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &v6only, 4) }
    guard address.withSockAddr({ bind(fd, $0, $1) }) == 0 else {
        let text = errnoText()
        close(fd)
        throw TestFailure("bind \(address): \(text)")
    }
    if !udp && listen { Glibc.listen(fd, 128) }
    return (fd, try Socket.localAddress(fd).port)
}

final class ProxyModeTests: XCTestCase {
    /// The payload of docker-proxy's own tests (cmd/docker-proxy/network_proxy_test.go): 71 bytes.
    static let payload = "Buffalo1 buffalo2 Buffalo3 buffalo4 buffalo5 buffalo6 Buffalo7 buffalo8"

    /// docker-proxy's flags for one mapping as dockerd passes them; 127.0.0.1 on both sides unless given.
    private func flags(
        proto: String = "tcp",
        hostIP: String = "127.0.0.1",
        hostPort: UInt16,
        containerIP: String = "127.0.0.1",
        containerPort: UInt16,
        listenFD: Bool = false
    ) -> [String] {
        [
            "-proto", proto, "-host-ip", hostIP, "-host-port", "\(hostPort)",
            "-container-ip", containerIP, "-container-port", "\(containerPort)",
        ] + (listenFD ? ["-use-listen-fd"] : [])
    }

    /// Starts berth and insists on "0\n". With `listenSocket`, as dockerd does for -use-listen-fd: the
    /// flag, and the socket as fd 4.
    private func startReady(
        _ arguments: [String],
        listenSocket: Int32? = nil,
        binary: String = berthBinary()
    ) throws -> ProxyLaunch {
        let listenFD = listenSocket == nil ? [] : ["-use-listen-fd"]
        let launch = try ProxyLaunch(arguments + listenFD, listenSocket: listenSocket, binary: binary)
        let ready = launch.readinessText()
        guard ready == "0\n" else {
            throw TestFailure("readiness \(ready.debugDescription); stderr: \(launch.process.stderr)")
        }
        return launch
    }

    /// Sends the buffalo payload, half-closes, and expects it back whole.
    private func assertEcho(_ host: String, _ port: UInt16, file: StaticString = #filePath, line: UInt = #line) throws {
        let client = try TestSocket.connect(SocketAddress(ip: host, port: port)!)
        try client.send(Self.payload)
        client.shutdownWrite()
        XCTAssertEqual(String(decoding: try client.receiveAll(), as: UTF8.self), Self.payload, file: file, line: line)
    }

    private func stop(
        _ launch: ProxyLaunch,
        _ signal: Int32 = SIGINT,
        file: StaticString = #filePath,
        line: UInt = #line
    ) {
        launch.process.signal(signal)
        XCTAssertEqual(launch.process.waitForExit(), 0, "stderr: \(launch.process.stderr)", file: file, line: line)
    }

    // MARK: forwarding

    func testBuffaloPayloadOverIPv4() throws {
        let server = try TestServer.echo()
        let port = freePort()
        let berth = try startReady(flags(hostPort: port, containerPort: server.address.port))
        XCTAssertEqual(Self.payload.utf8.count, 71)
        try assertEcho("127.0.0.1", port)
        stop(berth)
        XCTAssertEqual(berth.process.stdout, "")
        XCTAssertEqual(berth.process.stderr, "")
    }

    func testIPv6HostAndContainer() throws {
        let server = try TestServer.echo(host: "::1")
        let port = freePort()
        let berth = try startReady(
            flags(hostIP: "::1", hostPort: port, containerIP: "::1", containerPort: server.address.port)
        )
        try assertEcho("::1", port)
        // Bound to ::1 only, as docker-proxy binds it (IPV6_V6ONLY): not on 127.0.0.1.
        XCTAssertThrowsError(try TestSocket.connect(SocketAddress(ip: "127.0.0.1", port: port)!))
        stop(berth)
    }

    func testIPv6HostToIPv4Container() throws {
        let server = try TestServer.echo()
        let port = freePort()
        let berth = try startReady(flags(hostIP: "::1", hostPort: port, containerPort: server.address.port))
        try assertEcho("::1", port)
        stop(berth)
    }

    // MARK: -use-listen-fd

    func testListenFDIsAdoptedAndMadeNonBlocking() throws {
        let server = try TestServer.echo()
        let (fd, port) = try dockerdSocket("127.0.0.1")
        defer { close(fd) }
        XCTAssertEqual(fcntl(fd, F_GETFL) & O_NONBLOCK, 0, "dockerd's socket starts blocking")
        let berth = try startReady(flags(hostPort: port, containerPort: server.address.port), listenSocket: fd)
        // The flag lives on the open file description this process shares with berth.
        XCTAssertNotEqual(fcntl(fd, F_GETFL) & O_NONBLOCK, 0, "berth made the inherited socket non-blocking")
        for _ in 0..<3 { try assertEcho("127.0.0.1", port) }
        stop(berth)
    }

    func testDualStackListenFDReachedOverIPv4() throws {
        let server = try TestServer.echo()
        let (fd, port) = try dockerdSocket("::", dualStack: true)
        let berth = try startReady(
            flags(hostIP: "::", hostPort: port, containerPort: server.address.port),
            listenSocket: fd
        )
        close(fd)  // as dockerd may: berth's copy is the one that serves
        try assertEcho("127.0.0.1", port)
        try assertEcho("::1", port)
        stop(berth)
    }

    func testListenFDThatIsOnlyBoundIsListenedOn() throws {
        let server = try TestServer.echo()
        let (fd, port) = try dockerdSocket("127.0.0.1", listen: false)
        let berth = try startReady(flags(hostPort: port, containerPort: server.address.port), listenSocket: fd)
        close(fd)
        try assertEcho("127.0.0.1", port)
        stop(berth)
    }

    func testListenFDMissingOrOfTheWrongKindFailsTheStart() throws {
        let args = flags(hostPort: 9, containerPort: 9, listenFD: true)
        let missing = try ProxyLaunch(args)
        XCTAssertEqual(missing.readinessText(), "1\n-use-listen-fd: fd 4 is not open")
        XCTAssertEqual(missing.process.waitForExit(), 1)
        XCTAssertEqual(missing.process.stderr, "berth: -use-listen-fd: fd 4 is not open\n")

        let (udp, _) = try dockerdSocket("127.0.0.1", udp: true)
        defer { close(udp) }
        let wrongKind = try ProxyLaunch(args, listenSocket: udp)
        XCTAssertEqual(wrongKind.readinessText(), "1\n-use-listen-fd: fd 4 is a UDP socket, not tcp")
        XCTAssertEqual(wrongKind.process.waitForExit(), 1)

        let (tcp, _) = try dockerdSocket("127.0.0.1")
        defer { close(tcp) }
        var udpArgs = args
        udpArgs[1] = "udp"
        let tcpForUDP = try ProxyLaunch(udpArgs, listenSocket: tcp)
        XCTAssertEqual(tcpForUDP.readinessText(), "1\n-use-listen-fd: fd 4 is a TCP socket, not udp")
        XCTAssertEqual(tcpForUDP.process.waitForExit(), 1)

        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        let notSocket = aboveTen(fds[0])
        close(fds[1])
        defer { close(notSocket) }
        let notASocket = try ProxyLaunch(args, listenSocket: notSocket)
        XCTAssertEqual(notASocket.readinessText(), "1\n-use-listen-fd: fd 4 is not a socket")
        XCTAssertEqual(notASocket.process.waitForExit(), 1)
    }

    // MARK: UDP

    /// Sends the buffalo payload from a fresh client and expects it back from the address it was sent to.
    private func assertUDPEcho(
        _ host: String,
        _ port: UInt16,
        file: StaticString = #filePath,
        line: UInt = #line
    ) throws {
        let to = SocketAddress(ip: host, port: port)!
        let client = try TestUDPSocket(host: to.isV6 ? "::1" : "127.0.0.1")
        try client.send(Array(Self.payload.utf8), to: to)
        let (bytes, from) = try client.receiveFrom()
        XCTAssertEqual(String(decoding: bytes, as: UTF8.self), Self.payload, file: file, line: line)
        XCTAssertEqual(from, to, "the reply comes from the address the client sent to", file: file, line: line)
    }

    func testUDPOverIPv4AndIPv6() throws {
        let server4 = try TestUDPEchoServer()
        let server6 = try TestUDPEchoServer(host: "::1")
        let port4 = unusedUDPPort()
        let port6 = unusedUDPPort("::1")
        let berth4 = try startReady(flags(proto: "udp", hostPort: port4, containerPort: server4.address.port))
        let berth6 = try startReady(
            flags(proto: "udp", hostIP: "::1", hostPort: port6, containerIP: "::1", containerPort: server6.address.port)
        )
        for _ in 0..<3 {
            try assertUDPEcho("127.0.0.1", port4)
            try assertUDPEcho("::1", port6)
        }
        stop(berth4)
        stop(berth6, SIGTERM)
        XCTAssertEqual(berth4.process.stderr, "")
    }

    func testUDPIPv6HostToIPv4Container() throws {
        let server = try TestUDPEchoServer()
        let port = unusedUDPPort("::1")
        let berth = try startReady(
            flags(proto: "udp", hostIP: "::1", hostPort: port, containerPort: server.address.port)
        )
        try assertUDPEcho("::1", port)
        stop(berth)
    }

    func testUDPListenFDWithoutPacketInfo() throws {
        // dockerd binds a host address; such a socket has no IP_PKTINFO and needs none.
        let server = try TestUDPEchoServer()
        let (fd, port) = try dockerdSocket("127.0.0.1", udp: true)
        let berth = try startReady(
            flags(proto: "udp", hostPort: port, containerPort: server.address.port),
            listenSocket: fd
        )
        XCTAssertNotEqual(fcntl(fd, F_GETFL) & O_NONBLOCK, 0, "berth made the inherited socket non-blocking")
        close(fd)
        try assertUDPEcho("127.0.0.1", port)
        stop(berth)
    }

    func testUDPDualStackListenFDReachedOverIPv4() throws {
        let server = try TestUDPEchoServer()
        let (fd, port) = try dockerdSocket("::", udp: true, dualStack: true)
        let berth = try startReady(
            flags(proto: "udp", hostIP: "::", hostPort: port, containerPort: server.address.port),
            listenSocket: fd
        )
        close(fd)
        try assertUDPEcho("127.0.0.1", port)
        try assertUDPEcho("::1", port)
        stop(berth)
    }

    func testUDPBindConflictReportsOneAndTheError() throws {
        let port = unusedUDPPort()
        guard let holder = claimUDPPort("127.0.0.1", port) else { throw TestFailure("udp port \(port) was taken") }
        defer { holder.close() }
        let berth = try ProxyLaunch(flags(proto: "udp", hostPort: port, containerPort: 53))
        XCTAssertEqual(berth.readinessText(), "1\n53/udp: bind 127.0.0.1:\(port): address already in use")
        XCTAssertEqual(berth.process.waitForExit(), 1)
    }

    // MARK: start-up failures

    func testBindConflictReportsOneAndTheError() throws {
        let busy = try TestServer { _ in }
        let port = busy.address.port
        let berth = try ProxyLaunch(flags(hostPort: port, containerPort: 80))
        let expected = "1\n80/tcp: bind 127.0.0.1:\(port): address already in use"
        XCTAssertEqual(berth.readinessText(), expected)
        XCTAssertEqual(berth.process.waitForExit(), 1)
        XCTAssertEqual(berth.process.stderr, "berth: 80/tcp: bind 127.0.0.1:\(port): address already in use\n")
    }

    func testBadFlagValuesAndUnknownFlagsAreUsageErrorsWithNothingOnFD3() throws {
        let good = [
            "-host-ip", "127.0.0.1", "-host-port", "8080", "-container-ip", "127.0.0.1", "-container-port", "80",
        ]
        for (arguments, message) in [
            (good + ["-frobnicate"], "flag provided but not defined: -frobnicate"),
            (
                ["-host-port", "http", "-container-port", "80"],
                "invalid value \"http\" for flag -host-port: must be a decimal number"
            ),
            (
                ["-host-port", "8080", "-container-port", "70000"],
                "invalid value \"70000\" for flag -container-port: out of range (1-65535)"
            ),
            (
                ["-host-ip", "localhost", "-host-port", "8080", "-container-port", "80"],
                "invalid value \"localhost\" for flag -host-ip: invalid IP address: localhost"
            ),
            (
                ["-host-ip", "", "-host-port", "8080", "-container-port", "80"],
                "invalid value \"\" for flag -host-ip: empty IP address"
            ),
            (
                ["-container-ip", "172.17.0.300", "-host-port", "8080", "-container-port", "80"],
                "invalid value \"172.17.0.300\" for flag -container-ip: invalid IP address: 172.17.0.300"
            ),
            (good + ["-use-listen-fd=maybe"], "invalid boolean value \"maybe\" for -use-listen-fd: parse error"),
            (["-host-port", "8080"], "missing required flag: -container-port"),
            (good + ["-use-listen-fd", "false"], "unexpected argument \"false\"; write -use-listen-fd=false"),
        ] {
            let berth = try ProxyLaunch(arguments)
            XCTAssertEqual(berth.readiness(), [], "fd 3 ends with no bytes: \(arguments)")
            XCTAssertEqual(berth.process.waitForExit(), 2, "\(arguments)")
            XCTAssertTrue(
                berth.process.stderr.hasPrefix(message + "\nUsage of \(berthBinary()):\n"),
                berth.process.stderr
            )
            XCTAssertTrue(berth.process.stderr.contains("-use-listen-fd"), "the usage lists the flags")
            XCTAssertEqual(berth.process.stdout, "")
        }
    }

    func testUnknownProtocolIsAUsageError() throws {
        let berth = try ProxyLaunch(["-proto", "icmp", "-host-port", "8080", "-container-port", "80"])
        XCTAssertEqual(berth.readiness(), [])
        XCTAssertEqual(berth.process.waitForExit(), 2)
        XCTAssertTrue(
            berth.process.stderr.hasPrefix(
                "invalid value \"icmp\" for flag -proto: unsupported protocol (expected tcp, udp or sctp)\n"
            ),
            berth.process.stderr
        )
    }

    func testSCTPIsRefusedOnTheStatusPipe() throws {
        for listenFD in [false, true] {
            let berth = try ProxyLaunch(
                flags(proto: "sctp", hostPort: freePort(), containerPort: 80, listenFD: listenFD)
            )
            XCTAssertEqual(berth.readinessText(), "1\nunsupported protocol sctp")
            XCTAssertEqual(berth.process.waitForExit(), 1)
            XCTAssertEqual(berth.process.stderr, "berth: unsupported protocol sctp\n")
        }
    }

    // MARK: fd 3 absent or not a pipe

    func testWithoutFD3BerthRunsAndItsListenerWorks() throws {
        let server = try TestServer.echo()
        let port = freePort()
        // No fd 3 at all: berth's own first descriptors take the numbers 3 and up.
        let berth = try ProxyLaunch(flags(hostPort: port, containerPort: server.address.port), statusPipe: false)
        XCTAssertTrue(
            eventually { (try? self.assertEcho("127.0.0.1", port)) != nil },
            "stderr: \(berth.process.stderr)"
        )
        for _ in 0..<3 { try assertEcho("127.0.0.1", port) }
        stop(berth, SIGTERM)
        XCTAssertEqual(berth.process.stderr, "")
    }

    func testFD3ThatIsNotAPipeIsNeitherWrittenNorClosed() throws {
        let server = try TestServer.echo()
        let port = freePort()
        var template = Array("/tmp/berth-fd3-XXXXXX".utf8CString)
        let file = aboveTen(mkstemp(&template))
        let path = cText(template)
        defer {
            close(file)
            unlink(path)
        }
        let berth = try ProxyLaunch(flags(hostPort: port, containerPort: server.address.port), fd3: file)
        XCTAssertTrue(
            eventually { (try? self.assertEcho("127.0.0.1", port)) != nil },
            "stderr: \(berth.process.stderr)"
        )
        // Still berth's fd 3, still the file: berth did not close it and reuse the number.
        XCTAssertEqual(readLink("/proc/\(berth.process.pid)/fd/3") ?? "", path)
        stop(berth)
        var info = stat()
        XCTAssertEqual(fstat(file, &info), 0)
        XCTAssertEqual(info.st_size, 0, "nothing was written to a fd 3 that is not a pipe")
    }

    // MARK: restart, signals, invocation

    func testRestartWhileConnectionsSitInTimeWait() throws {
        // The server answers and closes first: berth passes the FIN on, so the client-facing socket on
        // berth's port closes first and ends in TIME_WAIT.
        let server = try TestServer { socket in
            _ = try? socket.receive(exactly: 4)
            try? socket.send("pong")
            socket.close()
        }
        let port = freePort()
        let args = flags(hostPort: port, containerPort: server.address.port)
        func pingPong() throws {
            let client = try TestSocket.connect(SocketAddress(ip: "127.0.0.1", port: port)!)
            try client.send("ping")
            XCTAssertEqual(try client.receiveAll(), Array("pong".utf8))
            client.close()
        }
        let first = try startReady(args)
        try pingPong()
        XCTAssertTrue(eventually { timeWaitCount(localPort: port) > 0 }, "a TIME_WAIT on 127.0.0.1:\(port)")
        stop(first)
        XCTAssertGreaterThan(timeWaitCount(localPort: port), 0, "the TIME_WAIT outlives berth")

        let second = try startReady(args)
        try pingPong()
        stop(second)
    }

    func testSigintAndSigtermExitZeroAndCloseConnections() throws {
        let server = try TestServer.echo()
        for signal in [SIGINT, SIGTERM] {
            let port = freePort()
            let berth = try startReady(flags(hostPort: port, containerPort: server.address.port))
            let client = try TestSocket.connect(SocketAddress(ip: "127.0.0.1", port: port)!)
            try client.send("x")
            XCTAssertEqual(try client.receive(exactly: 1), Array("x".utf8))
            stop(berth, signal)
            XCTAssertTrue(client.receiveOutcome().bytes.isEmpty, "the connection ends with berth (signal \(signal))")
            XCTAssertThrowsError(
                try TestSocket.connect(SocketAddress(ip: "127.0.0.1", port: port)!),
                "nothing listens any more"
            )
        }
    }

    func testInvokedThroughADockerProxySymlink() throws {
        var template = Array("/tmp/berth-proxy-XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { throw TestFailure("mkdtemp: \(errnoText())") }
        let dir = cText(template)
        let link = dir + "/docker-proxy"
        XCTAssertEqual(symlink(berthBinary(), link), 0)
        defer {
            unlink(link)
            rmdir(dir)
        }

        let server = try TestServer.echo()
        let port = freePort()
        let berth = try startReady(flags(hostPort: port, containerPort: server.address.port), binary: link)
        try assertEcho("127.0.0.1", port)
        stop(berth)

        let version = try Subprocess.run(link, ["-v"])
        XCTAssertEqual(version.code, 0)
        XCTAssertEqual(version.stdout, BerthVersion.line() + "\n")
        let usage = try Subprocess.run(link, ["-container-port", "x"])
        XCTAssertEqual(usage.code, 2)
        XCTAssertTrue(usage.stderr.contains("Usage of \(link):\n"), usage.stderr)
    }

    func testVersionAndHelp() throws {
        for flag in ["-v", "-version", "--version=true", "-v=1"] {
            let berth = try ProxyLaunch([flag])
            XCTAssertEqual(berth.readiness(), [], "no readiness report for \(flag)")
            XCTAssertEqual(berth.process.waitForExit(), 0, flag)
            XCTAssertEqual(berth.process.stdout, BerthVersion.line() + "\n", flag)
            XCTAssertEqual(berth.process.stderr, "", flag)
        }
        // `-h` alone is berth's own --help; with a docker-proxy flag, or spelled -help, it is Go's.
        for arguments in [["-help"], ["-h", "-proto", "tcp"]] {
            let help = try Subprocess.run(berthBinary(), arguments)
            XCTAssertEqual(help.code, 0, "\(arguments)")
            XCTAssertTrue(help.stderr.hasPrefix("Usage of \(berthBinary()):\n"), help.stderr)
            XCTAssertEqual(help.stdout, "")
        }
    }
}

/// TCP sockets in TIME_WAIT whose local port is `localPort`, from /proc/net/tcp and tcp6.
func timeWaitCount(localPort: UInt16) -> Int {
    let suffix = ":" + String(localPort, radix: 16, uppercase: true).leftPadded(to: 4)
    var count = 0
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        guard let file = fopen(table, "r") else { continue }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0 {
            let fields = String(cString: line!).split(separator: " ")
            // sl local_address rem_address st ...; TIME_WAIT is 06
            if fields.count > 3, fields[1].hasSuffix(suffix), fields[3] == "06" { count += 1 }
        }
    }
    return count
}

/// A NUL-terminated C string in an array, as text.
func cText(_ chars: [CChar]) -> String {
    String(decoding: chars.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        String(repeating: "0", count: max(0, width - count)) + self
    }
}
