// berth-proxy, the docker-proxy shim, as dockerd runs it (docker-proxy's flags, the status pipe on
// fd 3), beside a berth daemon: it hands its socket over and waits; its port lives and dies with it;
// it follows a daemon that restarts, loses no client meanwhile, and serves alone when none comes
// back. The shim is built by make (`make build`, `make test`), not by swift build.

import Control
import Glibc
import LinuxIO
import TestSupport
import XCTest

final class ShimTests: XCTestCase {
    private var directory = ""
    private var socketPath: String { directory + "/berth.sock" }

    private var shimBinary: String {
        var dir = berthBinary()
        while !dir.isEmpty && !dir.hasSuffix("/") { dir.removeLast() }
        return dir + "berth-proxy"
    }

    override func setUpWithError() throws {
        guard access(shimBinary, X_OK) == 0 else {
            throw XCTSkip("berth-proxy is not built: make build (or make test) builds it beside berth")
        }
        directory = try temporaryDirectory()
    }

    override func tearDown() {
        unlink(socketPath)
        rmdir(directory)
    }

    private func startDaemon() throws -> Subprocess {
        let daemon = try Subprocess(
            berthBinary(),
            [
                "daemon", "--mode", "userspace", "--threads", "2", "--control", socketPath, "--allow-target",
                "127.0.0.0/8",
            ]
        )
        let lines = daemon.waitForLines(1)
        guard lines.last == "control \(socketPath)" else {
            throw TestFailure("daemon printed \(lines), stderr \(daemon.stderr)")
        }
        return daemon
    }

    /// The shim for `hostPort` towards `backend`, as dockerd starts it; its readiness read.
    private func startShim(
        _ hostPort: UInt16,
        _ backend: SocketAddress,
        proto: String = "tcp",
        extraEnvironment: [String] = []
    ) throws -> ProxyLaunch {
        let launch = try ProxyLaunch(
            [
                "-proto", proto, "-host-ip", "127.0.0.1", "-host-port", "\(hostPort)", "-container-ip",
                backend.ipText, "-container-port", "\(backend.port)",
            ],
            binary: shimBinary,
            environment: Subprocess.currentEnvironment() + ["BERTH_CONTROL=\(socketPath)"] + extraEnvironment
        )
        XCTAssertEqual(launch.readinessText(), "0\n")
        return launch
    }

    private func entries() -> [String] {
        (try? Subprocess.run(berthBinary(), ["port", "ls", "--control", socketPath]).stdout)?
            .split(separator: "\n").map(String.init) ?? []
    }

    private func echo(_ port: UInt16, _ text: String) throws {
        let c = try TestSocket.connect(SocketAddress(ip: "127.0.0.1", port: port)!)
        try c.send(text)
        XCTAssertEqual(String(decoding: try c.receive(exactly: text.utf8.count), as: UTF8.self), text)
    }

    private func program(_ pid: pid_t) -> String {
        let path = readLink("/proc/\(pid)/exe") ?? ""
        return String(path.split(separator: "/").last ?? "")
    }

    func testTheShimHandsItsSocketOverAndItsPortGoesWithIt() throws {
        let server = try TestServer.echo()
        let daemon = try startDaemon()
        defer {
            daemon.signal(SIGTERM)
            XCTAssertEqual(daemon.waitForExit(), 0)
        }
        let port = freePort()
        let shim = try startShim(port, server.address)
        XCTAssertEqual(program(shim.process.pid), "berth-proxy", "the shim itself waits")
        try echo(port, "through the daemon")
        let pid = shim.process.pid
        XCTAssertEqual(
            entries(),
            ["1\tdocker-proxy/\(pid)/\(server.address)\t\(server.address.port)/tcp -> 127.0.0.1:\(port)"]
        )
        // Not the API's to remove while the shim lives.
        let refused = try Subprocess.run(berthBinary(), ["port", "rm", "1", "--control", socketPath])
        XCTAssertEqual(refused.code, 1)
        XCTAssertTrue(refused.stderr.contains("belong to the docker-proxy shim pid \(pid)"), refused.stderr)
        // dockerd stops it with SIGINT: the daemon removes the port, then the shim exits 0.
        shim.process.signal(SIGINT)
        XCTAssertEqual(shim.process.waitForExit(), 0)
        XCTAssertEqual(entries(), [])
        XCTAssertThrowsError(try TestSocket.connect(SocketAddress(ip: "127.0.0.1", port: port)!, timeoutSeconds: 2))
    }

    func testAKilledShimsPortIsRemoved() throws {
        let server = try TestServer.echo()
        let daemon = try startDaemon()
        defer {
            daemon.signal(SIGTERM)
            XCTAssertEqual(daemon.waitForExit(), 0)
        }
        let port = freePort()
        let shim = try startShim(port, server.address)
        try echo(port, "before")
        shim.process.signal(SIGKILL)
        _ = shim.process.waitForExit()
        XCTAssertTrue(eventually { self.entries().isEmpty }, "\(entries())")
    }

    /// The daemon killed and started again: the shim hands its socket to the new one, and a
    /// client that connected while no daemon ran waits in the backlog and is served, not refused.
    func testTheShimFollowsADaemonRestartAndLosesNoClient() throws {
        let server = try TestServer.echo()
        var daemon = try startDaemon()
        let port = freePort()
        let shim = try startShim(port, server.address)
        try echo(port, "before the restart")
        daemon.signal(SIGKILL)
        _ = daemon.waitForExit()
        // Meanwhile: the connection is queued by the shim's copy of the listener.
        let waiting = try TestSocket.connect(SocketAddress(ip: "127.0.0.1", port: port)!)
        try waiting.send("queued")
        daemon = try startDaemon()
        defer {
            daemon.signal(SIGTERM)
            XCTAssertEqual(daemon.waitForExit(), 0)
        }
        XCTAssertEqual(String(decoding: try waiting.receive(exactly: 6), as: UTF8.self), "queued")
        try echo(port, "after the restart")
        XCTAssertTrue(eventually { self.entries().count == 1 }, "\(entries())")
        shim.process.signal(SIGTERM)
        XCTAssertEqual(shim.process.waitForExit(), 0)
    }

    /// No daemon ever: berth-proxy is the standalone drop-in (it execs berth, same arguments and fds).
    func testWithoutADaemonTheShimIsTheStandaloneDropIn() throws {
        let server = try TestServer.echo()
        let port = freePort()
        let shim = try startShim(port, server.address)
        XCTAssertEqual(program(shim.process.pid), "berth")
        try echo(port, "standalone")
        shim.process.signal(SIGINT)
        XCTAssertEqual(shim.process.waitForExit(), 0)
    }

    /// The daemon gone for longer than BERTH_PROXY_FALLBACK: the shim serves its port itself.
    func testAShimServesAloneWhenTheDaemonDoesNotComeBack() throws {
        let server = try TestServer.echo()
        let daemon = try startDaemon()
        let port = freePort()
        let shim = try startShim(port, server.address, extraEnvironment: ["BERTH_PROXY_FALLBACK=1"])
        try echo(port, "with the daemon")
        daemon.signal(SIGKILL)
        _ = daemon.waitForExit()
        XCTAssertTrue(eventually { self.program(shim.process.pid) == "berth" }, "the shim did not fall back")
        try echo(port, "alone")
        shim.process.signal(SIGTERM)
        XCTAssertEqual(shim.process.waitForExit(), 0)
    }

    func testAUDPShimsDatagramsReachTheBackend() throws {
        let backend = try TestUDPEchoServer()
        let daemon = try startDaemon()
        defer {
            daemon.signal(SIGTERM)
            XCTAssertEqual(daemon.waitForExit(), 0)
        }
        let port = unusedUDPPort()
        let shim = try startShim(port, backend.address, proto: "udp")
        let client = try TestUDPSocket()
        try client.connect(SocketAddress(ip: "127.0.0.1", port: port)!)
        try client.send("a datagram")
        XCTAssertEqual(String(decoding: try client.receive(), as: UTF8.self), "a datagram")
        XCTAssertEqual(entries().first?.hasSuffix("/udp -> 127.0.0.1:\(port)"), true, "\(entries())")
        shim.process.signal(SIGTERM)
        XCTAssertEqual(shim.process.waitForExit(), 0)
    }
}
