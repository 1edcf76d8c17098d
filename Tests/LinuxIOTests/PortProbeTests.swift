import Glibc
import LinuxIO
import XCTest

final class PortProbeTests: XCTestCase {
    func testAListenerOrABoundUDPSocketMakesThePortInUseAndClosingFreesIt() throws {
        for udp in [false, true] {
            let holder = try Socket.make(family: AF_INET, type: Int32(udp ? SOCK_DGRAM.rawValue : SOCK_STREAM.rawValue))
            try Socket.bind(holder.raw, SocketAddress(ip: "127.0.0.1", port: 0)!)
            if !udp { try Socket.listen(holder.raw, backlog: 1) }
            let address = try Socket.localAddress(holder.raw)
            XCTAssertTrue(try Socket.portInUse(address, udp: udp), "udp: \(udp)")
            // All addresses of the family clash with one of them, as bind says.
            XCTAssertTrue(try Socket.portInUse(SocketAddress(ip: "0.0.0.0", port: address.port)!, udp: udp))
            // Not asserted: that the other protocol or `::` is free on this number. Another test's TCP
            // connection may hold it as its ephemeral port all along (the ranges are shared).
            holder.close()
            XCTAssertFalse(try Socket.portInUse(address, udp: udp), "udp: \(udp), after close")
        }
    }

    func testAnAddressNotOnThisHostIsAnErrorNotAFreePort() {
        XCTAssertThrowsError(try Socket.portInUse(SocketAddress(ip: "198.51.100.7", port: 8080)!, udp: false)) {
            XCTAssertEqual("\($0)", "bind 198.51.100.7:8080: cannot assign requested address")
        }
    }
}
