// The nftables fast path and hybrid mode, end to end, inside namespaces the test creates:
// client (outside) → host (berth, its table) → bridge → container. Root only.

import Glibc
import LinuxIO
import Synchronization
import TestSupport
import XCTest

final class KernelPathTests: XCTestCase {
    private var topology: Topology!
    private let table = "berth_e2e"

    override func setUpWithError() throws {
        if let reason = Topology.unavailableReason {
            print("skipping kernel path test: \(reason)")
            throw XCTSkip(reason)
        }
        guard access("/usr/sbin/nft", X_OK) == 0 else {
            throw XCTSkip("nft is not installed (make test installs nftables)")
        }
        topology = try Topology()
    }

    override func tearDown() {
        topology?.destroy()
        topology = nil
    }

    /// A container server that answers with the address it saw the client come from.
    private func peerReportingServer() throws -> TestServer {
        try Topology.inside(topology.container) {
            try TestServer(host: Topology.containerIP) { socket in
                let peer = (try? Socket.peerAddress(socket.fd).ipText) ?? "?"
                _ = try? socket.receive()
                try? socket.send(peer)
                socket.close()
            }
        }
    }

    private func startBerth(_ arguments: [String], lines: Int, prefix: [String] = []) throws -> Subprocess {
        let (program, argv) = Topology.exec(
            in: topology.host,
            prefix.first ?? berthBinary(),
            Array(prefix.dropFirst()) + (prefix.isEmpty ? [] : [berthBinary()]) + ["run", "--nft-table", table]
                + arguments
        )
        let berth = try Subprocess(program, argv)
        guard berth.waitForLines(lines).count >= lines else {
            throw TestFailure("berth printed \(berth.stdoutLines); stderr: \(berth.stderr)")
        }
        return berth
    }

    /// What the container saw as our address, connecting from namespace `ns`.
    private func seenAs(from ns: String, to host: String, port: UInt16) throws -> String {
        try Topology.inside(ns) {
            let c = try TestSocket.connect(SocketAddress(ip: host, port: port)!, timeoutSeconds: 5)
            try c.send("who am I?")
            return String(decoding: try c.receiveAll(), as: UTF8.self)
        }
    }

    private func nft(_ arguments: String) throws -> String {
        let (program, argv) = Topology.exec(
            in: topology.host,
            "/usr/sbin/nft",
            arguments.split(separator: " ").map(String.init)
        )
        let result = try Subprocess.run(program, argv)
        return result.code == 0 ? result.stdout : "error: \(result.stderr)"
    }

    func testHybridServesTheNetworkInTheKernelAndLoopbackInUserspace() throws {
        let server = try peerReportingServer()
        defer { server.stop() }
        let berth = try startBerth(
            ["--mode", "hybrid", "-p", "8080:\(server.address.port)", Topology.containerIP],
            lines: 2
        )

        // From outside, through DNAT: the container sees the client's real address.
        XCTAssertEqual(try seenAs(from: topology.client, to: Topology.hostOutsideIP, port: 8080), Topology.clientIP)
        // From the host to its own non-loopback address: the output chain DNATs it.
        XCTAssertEqual(try seenAs(from: topology.host, to: Topology.hostOutsideIP, port: 8080), Topology.hostOutsideIP)
        // From the host's loopback: the userspace relay, which connects from the bridge address.
        XCTAssertEqual(try seenAs(from: topology.host, to: "127.0.0.1", port: 8080), Topology.bridgeIP)
        XCTAssertEqual(try seenAs(from: topology.host, to: "::1", port: 8080), Topology.bridgeIP)
        // The container reaching its own published port through a host address: hairpin, masqueraded.
        XCTAssertEqual(try seenAs(from: topology.container, to: Topology.bridgeIP, port: 8080), Topology.bridgeIP)

        // The table as berth laid it out, with a counter that moved for the wildcard rule.
        let listing = try nft("list table inet \(table)")
        XCTAssertTrue(listing.contains("flags owner"), listing)
        for chain in ["chain prerouting", "chain output", "chain postrouting", "map wild4", "map dnat4", "masquerade"] {
            XCTAssertTrue(listing.contains(chain), "missing \(chain) in\n\(listing)")
        }
        let element = try XCTUnwrap(listing.split(separator: "\n").first { $0.contains("tcp . 8080") }, listing)
        XCTAssertTrue(element.contains(": \(Topology.containerIP) . \(server.address.port)"), String(element))
        XCTAssertFalse(element.contains("packets 0 "), "the rule's counter must have moved: \(element)")

        berth.signal(SIGTERM)
        XCTAssertEqual(berth.waitForExit(), 0)
        XCTAssertTrue(try nft("list tables").isEmpty, "SIGTERM removes the table")
    }

    func testUDPThroughDNATKeepsTheClientAddress() throws {
        let server = try Topology.inside(topology.container) { try TestUDPEchoServer(host: Topology.containerIP) }
        defer { server.stop() }
        let berth = try startBerth(
            ["--mode", "hybrid", "-p", "5353:\(server.address.port)/udp", Topology.containerIP],
            lines: 2
        )
        let reply = try Topology.inside(topology.client) {
            let client = try TestUDPSocket(host: "0.0.0.0")
            try client.send(Array("ping".utf8), to: SocketAddress(ip: Topology.hostOutsideIP, port: 5353)!)
            let (bytes, from) = try client.receiveFrom()
            return (String(decoding: bytes, as: UTF8.self), from.description)
        }
        XCTAssertEqual(reply.0, "ping")
        XCTAssertEqual(reply.1, "\(Topology.hostOutsideIP):5353", "the reply is un-NATed by conntrack")
        XCTAssertEqual(
            server.senders.map(\.ipText),
            [Topology.clientIP],
            "the container sees the client's real address"
        )
        // The host's loopback goes through the userspace relay.
        let viaRelay = try Topology.inside(topology.host) {
            let client = try TestUDPSocket(host: "127.0.0.1")
            try client.send(Array("local".utf8), to: SocketAddress(ip: "127.0.0.1", port: 5353)!)
            return String(decoding: try client.receive(), as: UTF8.self)
        }
        XCTAssertEqual(viaRelay, "local")
        XCTAssertEqual(server.senders.last?.ipText, Topology.bridgeIP)
        XCTAssertTrue(try nft("list table inet \(table)").contains("udp . 5353"))
        berth.signal(SIGTERM)
        XCTAssertEqual(berth.waitForExit(), 0)
        // The UDP flow's conntrack entry went with the table: no flow keeps going to the old target.
        let (program, argv) = Topology.exec(
            in: topology.host,
            "/usr/sbin/conntrack",
            ["-L", "-p", "udp", "--orig-port-dst", "5353"]
        )
        let entries = try Subprocess.run(program, argv)
        XCTAssertFalse(entries.stdout.contains("src=\(Topology.clientIP)"), entries.stdout)
    }

    /// A client that sent to the host port before it was published (a resolver that keeps its
    /// source port) has an un-NATed conntrack entry: without its deletion at the add, its later
    /// datagrams follow that entry to the host (the relay, in hybrid mode: the container sees the
    /// bridge's address), never through DNAT.
    func testAUDPFlowThatBeganBeforeTheAddIsDNATedAfterIt() throws {
        let server = try Topology.inside(topology.container) { try TestUDPEchoServer(host: Topology.containerIP) }
        defer { server.stop() }
        // Conntrack runs in a namespace only once something there uses it (dockerd's nat rules on a
        // real host): a table of the test's own that counts new flows.
        XCTAssertEqual(try nft("add table inet track"), "")
        XCTAssertEqual(
            try nft("add chain inet track pre { type filter hook prerouting priority 0 ; ct state new counter ; }"),
            ""
        )
        let client = try Topology.inside(topology.client) { try TestUDPSocket(host: "0.0.0.0") }
        client.setTimeout(milliseconds: 300)
        let host = SocketAddress(ip: Topology.hostOutsideIP, port: 5354)!
        try client.send(Array("early".utf8), to: host)
        _ = client.receiveOutcome()  // nothing listens yet: no answer
        let berth = try startBerth(
            ["--mode", "hybrid", "-p", "5354:\(server.address.port)/udp", Topology.containerIP],
            lines: 2
        )
        client.setTimeout(milliseconds: 5000)
        try client.send(Array("later".utf8), to: host)
        XCTAssertEqual(String(decoding: try client.receive(), as: UTF8.self), "later")
        XCTAssertEqual(server.senders.map(\.ipText), [Topology.clientIP], "DNAT, not the relay, carried it")
        berth.signal(SIGTERM)
        XCTAssertEqual(berth.waitForExit(), 0)
    }

    func testKernelModeServesWithoutTheRelayAndRefusesLoopback() throws {
        let server = try peerReportingServer()
        defer { server.stop() }
        let berth = try startBerth(
            ["--mode", "kernel", "-p", "8080:\(server.address.port)", Topology.containerIP],
            lines: 1
        )
        XCTAssertEqual(
            berth.stdoutLines,
            ["\(server.address.port)/tcp -> 0.0.0.0:8080"],
            "kernel mode binds only the container's family"
        )
        XCTAssertEqual(try seenAs(from: topology.client, to: Topology.hostOutsideIP, port: 8080), Topology.clientIP)
        // The port is only reserved on the host: loopback is refused, not relayed.
        XCTAssertThrowsError(try seenAs(from: topology.host, to: "127.0.0.1", port: 8080))
        berth.signal(SIGINT)
        XCTAssertEqual(berth.waitForExit(), 0)

        let (program, argv) = Topology.exec(
            in: topology.host,
            berthBinary(),
            ["run", "--mode", "kernel", "-p", "127.0.0.1:8080:80", Topology.containerIP]
        )
        let refused = try Subprocess.run(program, argv)
        XCTAssertEqual(refused.code, 1)
        XCTAssertEqual(
            refused.stderr,
            "berth: 80/tcp: 127.0.0.1:8080: the kernel path does not serve loopback addresses (use --mode hybrid)\n"
        )
        XCTAssertTrue(try nft("list tables").isEmpty, "a failed start leaves no table")
    }

    func testSigkillLeavesNoTableBehind() throws {
        let berth = try startBerth(["--mode", "hybrid", "-p", "8080:80", Topology.containerIP], lines: 2)
        XCTAssertTrue(try nft("list tables").contains(table))
        berth.signal(SIGKILL)
        XCTAssertEqual(berth.waitForExit(), 128 + SIGKILL)
        XCTAssertTrue(
            eventually { (try? self.nft("list tables").isEmpty) == true },
            "the owner flag removes the table with its socket"
        )
    }

    func testWithoutNetAdminItFallsBackWithANoticeAndKernelModeFails() throws {
        guard access("/usr/bin/setpriv", X_OK) == 0 else { throw XCTSkip("setpriv (util-linux) is not installed") }
        let server = try peerReportingServer()
        defer { server.stop() }
        let drop = ["/usr/bin/setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin"]
        let berth = try startBerth(
            ["-p", "127.0.0.1:8080:\(server.address.port)", Topology.containerIP],
            lines: 1,
            prefix: drop
        )
        XCTAssertTrue(berth.stderr.hasPrefix("berth: notice: no CAP_NET_ADMIN, so no kernel fast path"), berth.stderr)
        XCTAssertEqual(try seenAs(from: topology.host, to: "127.0.0.1", port: 8080), Topology.bridgeIP)
        XCTAssertTrue(try nft("list tables").isEmpty)
        berth.signal(SIGTERM)
        XCTAssertEqual(berth.waitForExit(), 0)

        let (program, argv) = Topology.exec(
            in: topology.host,
            drop[0],
            Array(drop.dropFirst()) + [berthBinary(), "run", "--mode", "kernel", "-p", "8080:80", Topology.containerIP]
        )
        let refused = try Subprocess.run(program, argv)
        XCTAssertEqual(refused.code, 1)
        XCTAssertEqual(
            refused.stderr,
            "berth: --mode kernel needs CAP_NET_ADMIN to program nftables (run as root, or use --mode userspace)\n"
        )
    }

    func testARejectedTableIsAReadableErrorAndLeavesNothing() throws {
        let first = try startBerth(["--mode", "hybrid", "-p", "8080:80", Topology.containerIP], lines: 2)
        // A second berth asking for the same table name: the kernel refuses the batch.
        let (program, argv) = Topology.exec(
            in: topology.host,
            berthBinary(),
            ["run", "--mode", "hybrid", "--nft-table", table, "-p", "9090:80", Topology.containerIP]
        )
        let second = try Subprocess.run(program, argv)
        XCTAssertEqual(second.code, 1)
        XCTAssertTrue(second.stderr.hasPrefix("berth: nftables: add table inet \(table): "), second.stderr)
        XCTAssertEqual(second.stderr.filter { $0 == "\n" }.count, 1, second.stderr)
        XCTAssertEqual(second.stdout, "", "nothing reported as ready")
        let listing = try nft("list table inet \(table)")
        XCTAssertTrue(listing.contains("tcp . 8080"), "the first berth's rules are intact")
        XCTAssertFalse(listing.contains("9090"), "nothing of the rejected batch is installed")
        first.signal(SIGTERM)
        XCTAssertEqual(first.waitForExit(), 0)
    }
}
