// Segmented sends (UDP GSO) to the backend: a batch of datagrams of one size goes down the stack
// as one send and must arrive as the same datagrams, each intact and in order. The loop is turned
// by hand, so the datagrams queued before it runs are read in one batch.

import Glibc
import LinuxIO
import Relay
import TestSupport
import XCTest

final class UDPSegmentTests: XCTestCase {
    /// `sizes` sent by one client before the relay runs, then read at the backend.
    private func relayed(
        _ sizes: [Int],
        prefix: Bool = false
    ) throws -> (got: [[UInt8]], sent: [[UInt8]], segmented: UInt64) {
        let backend = try TestUDPSocket()
        var config = RelayConfig()
        config.proxyProtocolUDP = prefix
        let relay = try HandDrivenRelay(target: backend.localAddress, config: config)
        let client = try TestUDPSocket()
        try client.connect(relay.address)
        var sent: [[UInt8]] = []
        for (i, size) in sizes.enumerated() {
            let datagram = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ i) }
            try client.send(datagram)
            sent.append(datagram)
        }
        try relay.serve()
        var got: [[UInt8]] = []
        for _ in sizes { got.append(try backend.receiveFrom().bytes) }
        return (got, sent, relay.context.counters.segmentedSends)
    }

    func testABatchOfOneSizeGoesAsOneSegmentedSendAndArrivesAsTheSameDatagrams() throws {
        let sizes = Array(repeating: 1400, count: 31) + [600]
        let (got, sent, segmented) = try relayed(sizes)
        XCTAssertEqual(got, sent, "every datagram intact, in order, none merged or split")
        XCTAssertEqual(segmented, 1, "one send for all 32")
    }

    func testMixedSizesAreSegmentedInRunsAndLargeOnesToo() throws {
        // A run ends with the first shorter datagram, which it takes, or a longer one, which it
        // leaves; 9,000-byte ones segment too (loopback's MTU takes them), at most 65,000 bytes a
        // send: seven of them. Zero-length datagrams are never segmented.
        let sizes = [500, 500, 500, 80, 1200, 1200] + Array(repeating: 9000, count: 9) + [1, 0, 0]
        let (got, sent, segmented) = try relayed(sizes)
        XCTAssertEqual(got, sent)
        XCTAssertEqual(segmented, 4, "500 ×3 and 80, 1,200 ×2, 9,000 ×7, 9,000 ×2 and 1")
    }

    func testDatagramsWithAPROXYHeaderAreSegmentedWithTheirHeaders() throws {
        let sizes = Array(repeating: 1000, count: 8)
        let (got, sent, segmented) = try relayed(sizes, prefix: true)
        XCTAssertEqual(got.count, 8)
        for (g, s) in zip(got, sent) {
            XCTAssertEqual(Array(g.suffix(s.count)), s, "the payload after its header")
            XCTAssertEqual(g.count, s.count + 28, "a v2 header for IPv4 is 28 bytes")
        }
        XCTAssertEqual(segmented, 1)
    }
}
