// A loop's totals are the sum of its mappings' counters, those removed included, and a removed
// mapping's counters are let go once nothing but the loop holds them.

import LinuxIO
import Logging
import XCTest

@testable import Relay

final class CounterTests: XCTestCase {
    func testTotalsKeepWhatRemovedMappingsCounted() throws {
        let context = RelayContext(loop: try EventLoop())
        let kept = context.counterBox(options: MappingOptions(), logger: context.logger)
        weak var removed: MappingCounterBox?
        do {
            let box = context.counterBox(options: MappingOptions(), logger: context.logger)
            removed = box
            box.pointer.pointee.accepted = 3
            box.pointer.pointee.bytesToBackend = 100
        }
        kept.pointer.pointee.accepted = 2
        kept.pointer.pointee.active = 1
        XCTAssertNotNil(removed, "the loop holds every box until it sums them")

        let totals = context.counters
        XCTAssertEqual(totals.accepted, 5)
        XCTAssertEqual(totals.bytesToBackend, 100)
        XCTAssertEqual(totals.active, 1)
        XCTAssertNil(removed, "a box nothing else holds is folded into the totals and let go")

        kept.pointer.pointee.accepted += 1
        XCTAssertEqual(context.counters.accepted, 6, "counted once, also after folding")
    }

    func testABoxAConnectionStillHoldsStaysLive() throws {
        let context = RelayContext(loop: try EventLoop())
        var holder: MappingCounterBox? = context.counterBox(options: MappingOptions(), logger: context.logger)
        weak let watched = holder
        _ = context.counters
        XCTAssertNotNil(watched)
        holder?.pointer.pointee.closed = 7
        XCTAssertEqual(context.counters.closed, 7)
        holder = nil
        XCTAssertEqual(context.counters.closed, 7)
        XCTAssertNil(watched)
    }
}
