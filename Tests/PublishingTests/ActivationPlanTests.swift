// Which socket systemd passed serves which host address of which -p mapping, and the one line
// a unit file and a command line that disagree get.

import Glibc
import LinuxIO
import Mappings
import XCTest

@testable import Publishing

final class ActivationPlanTests: XCTestCase {
    private func mappings(_ specs: String...) throws -> [PortMapping] {
        let target = try XCTUnwrap(IPAddress("172.17.0.2"))
        return try specs.flatMap { try PortSpec(parsing: $0).mappings(to: target) }
    }

    private func socket(
        _ fd: Int32,
        _ ip: String,
        _ port: UInt16,
        _ proto: Proto = .tcp,
        dualStack: Bool = false
    ) -> PassedSocket {
        PassedSocket(label: "fd \(fd)", address: SocketAddress(ip: ip, port: port)!, proto: proto, dualStack: dualStack)
    }

    private func plan(_ mappings: [PortMapping], _ sockets: [PassedSocket]) throws -> [(Int, [String])] {
        let publisher = Publisher()
        return try ActivationPlan(mappings: mappings, sockets: sockets, hostAddresses: publisher.hostAddresses)
            .entries.map { ($0.socket, $0.ports.map(\.line)) }
    }

    private func refusal(_ mappings: [PortMapping], _ sockets: [PassedSocket]) -> String? {
        do {
            _ = try plan(mappings, sockets)
            return nil
        } catch {
            return "\(error)"
        }
    }

    func testADualStackSocketServesBothFamiliesOfAnAllAddressMapping() throws {
        // systemd's ListenStream=8080: one [::]:8080 socket without IPV6_V6ONLY.
        let got = try plan(mappings("8080:80"), [socket(3, "::", 8080, dualStack: true)])
        XCTAssertEqual(got.map(\.0), [0])
        XCTAssertEqual(got[0].1, ["80/tcp -> 0.0.0.0:8080", "80/tcp -> [::]:8080"])
    }

    func testSocketsMatchByAddressPortAndProtocolInAnyOrder() throws {
        let sockets = [
            socket(3, "127.0.0.1", 53, .udp), socket(4, "::", 8080), socket(5, "0.0.0.0", 8080),
            socket(6, "127.0.0.1", 53),
        ]
        let got = try plan(mappings("8080:80", "127.0.0.1:53:53", "127.0.0.1:53:53/udp"), sockets)
        XCTAssertEqual(got.map(\.0), [2, 1, 3, 0])
        XCTAssertEqual(
            got.flatMap(\.1),
            [
                "80/tcp -> 0.0.0.0:8080", "80/tcp -> [::]:8080", "53/tcp -> 127.0.0.1:53", "53/udp -> 127.0.0.1:53",
            ]
        )
        // A host range takes the socket whose port is in it.
        XCTAssertEqual(
            try plan(mappings("127.0.0.1:8000-8010:80"), [socket(3, "127.0.0.1", 8004)]).flatMap(\.1),
            ["80/tcp -> 127.0.0.1:8004"]
        )
    }

    func testMismatchesAreOneLine() throws {
        XCTAssertEqual(
            refusal(try mappings("8080:80"), [socket(3, "0.0.0.0", 8080)]),
            "socket activation: 80/tcp: no socket was passed for [::]:8080 (started with LISTEN_FDS, berth binds nothing itself)"
        )
        XCTAssertEqual(
            refusal(try mappings("127.0.0.1:8080:80"), [socket(3, "127.0.0.1", 8080), socket(4, "127.0.0.1", 9090)]),
            "socket activation: fd 4 127.0.0.1:9090/tcp matches no -p mapping"
        )
        XCTAssertEqual(
            refusal(try mappings("127.0.0.1:8080:80"), [socket(3, "127.0.0.1", 8080, .udp)]),
            "socket activation: 80/tcp: no socket was passed for 127.0.0.1:8080 (started with LISTEN_FDS, berth binds nothing itself)"
        )
        // A dual-stack socket serves both families only where all addresses were asked for.
        XCTAssertEqual(
            refusal(try mappings("0.0.0.0:8080:80"), [socket(3, "::", 8080, dualStack: true)]),
            "socket activation: 80/tcp: no socket was passed for 0.0.0.0:8080 (started with LISTEN_FDS, berth binds nothing itself)"
        )
        XCTAssertTrue(
            refusal(try mappings("127.0.0.1::80"), [socket(3, "127.0.0.1", 8080)])?.contains(
                "a port the system picks cannot come from a passed socket"
            ) == true
        )
        XCTAssertEqual(
            refusal(try mappings("127.0.0.1:8080:80", "127.0.0.1:8080:81"), [socket(3, "127.0.0.1", 8080)]),
            "socket activation: fd 3 127.0.0.1:8080/tcp matches both -p 127.0.0.1:8080:172.17.0.2:80/tcp and -p 127.0.0.1:8080:172.17.0.2:81/tcp"
        )
        XCTAssertEqual(
            refusal(
                try mappings("127.0.0.1:8000-8010:80"),
                [socket(3, "127.0.0.1", 8000), socket(4, "127.0.0.1", 8001)]
            ),
            "socket activation: 80/tcp: fd 3 127.0.0.1:8000/tcp and fd 4 127.0.0.1:8001/tcp both match 127.0.0.1:8000-8010"
        )
    }

    func testInspectReadsAddressProtocolAndDualStack() throws {
        let v6 = try Socket.make(family: AF_INET6, type: Int32(SOCK_STREAM.rawValue))
        try Socket.setOption(v6.raw, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 0)
        try Socket.bind(v6.raw, SocketAddress(ip: "::", port: 0)!)
        let passed = try PassedSocket.inspect(v6, name: "web")
        XCTAssertEqual(passed.proto, .tcp)
        XCTAssertTrue(passed.dualStack)
        XCTAssertEqual("\(passed)", "fd \(v6.raw) \"web\" [::]:\(passed.address.port)/tcp")
        let udp = try Socket.make(family: AF_INET, type: Int32(SOCK_DGRAM.rawValue))
        try Socket.bind(udp.raw, SocketAddress(ip: "127.0.0.1", port: 0)!)
        let u = try PassedSocket.inspect(udp)
        XCTAssertEqual(u.proto, .udp)
        XCTAssertFalse(u.dualStack)
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds), 0)
        let unix = Descriptor(taking: fds[0])
        defer { close(fds[1]) }
        XCTAssertThrowsError(try PassedSocket.inspect(unix)) {
            XCTAssertEqual("\($0)", "socket activation: fd \(fds[0]) is not an IPv4 or IPv6 socket")
        }
    }
}
