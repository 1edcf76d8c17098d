import Glibc
import LinuxIO
import Relay
import TestSupport
import XCTest

final class FlowTableTests: XCTestCase {
    /// A distinct IPv4 client for each n: 10.a.b.c, port 1024 + n % 50000.
    private func v4(_ n: Int) -> FlowKey {
        FlowKey(
            SocketAddress(
                ip: [10, UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)],
                port: UInt16(1024 + n % 50000)
            )
        )
    }

    private func at(_ seconds: Int) -> Instant { Instant(nanoseconds: UInt64(seconds) * 1_000_000_000) }

    func testInsertLookupAndKeysOfBothFamilies() {
        let table = UDPFlowTable(capacity: 8)
        let a = FlowKey(SocketAddress(ip: "127.0.0.1", port: 5000)!)
        let b = FlowKey(SocketAddress(ip: "127.0.0.1", port: 5001)!)
        let c = FlowKey(SocketAddress(ip: "::1", port: 5000)!)
        let d = FlowKey(SocketAddress(ip: "::ffff:127.0.0.1", port: 5000)!)
        XCTAssertNil(table.lookup(a))
        let sa = table.insert(a, now: at(1))
        let sb = table.insert(b, now: at(1))
        let sc = table.insert(c, now: at(1))
        let sd = table.insert(d, now: at(1))
        XCTAssertNil(sa.evicted)
        XCTAssertEqual(Set([sa.slot, sb.slot, sc.slot, sd.slot]).count, 4)
        XCTAssertEqual(table.lookup(a), sa.slot)
        XCTAssertEqual(table.lookup(b), sb.slot, "same IP, other port: another client")
        XCTAssertEqual(table.lookup(c), sc.slot)
        XCTAssertEqual(table.lookup(d), sd.slot, "an IPv4-mapped IPv6 client is not the IPv4 one")
        XCTAssertEqual(table.count, 4)
        XCTAssertEqual(table.key(at: sc.slot), c)
        XCTAssertEqual(table.key(at: sc.slot).address, SocketAddress(ip: "::1", port: 5000)!)
        XCTAssertEqual(table.key(at: sa.slot).address.description, "127.0.0.1:5000")
    }

    func testTouchOrdersByRecencyAndAFullTableEvictsTheLeastRecentlyActive() {
        let table = UDPFlowTable(capacity: 3)
        let slots = (0..<3).map { table.insert(v4($0), now: at($0)).slot }
        XCTAssertEqual(table.keysByRecency(), [v4(0), v4(1), v4(2)])
        table.touch(slots[0], now: at(10))
        XCTAssertEqual(table.keysByRecency(), [v4(1), v4(2), v4(0)])
        XCTAssertTrue(table.isFull)

        let inserted = table.insert(v4(3), now: at(11))
        XCTAssertEqual(inserted.evicted, v4(1), "the least recently active goes, never the new one")
        XCTAssertEqual(inserted.slot, slots[1], "and its slot is reused")
        XCTAssertNil(table.lookup(v4(1)))
        XCTAssertEqual(table.lookup(v4(3)), inserted.slot)
        XCTAssertEqual(table.keysByRecency(), [v4(2), v4(0), v4(3)])
        XCTAssertEqual(table.count, 3)

        table.touch(table.lookup(v4(2))!, now: at(12))
        XCTAssertEqual(table.insert(v4(4), now: at(13)).evicted, v4(0))
        XCTAssertEqual(table.keysByRecency(), [v4(3), v4(2), v4(4)])
    }

    func testExpiryTakesIdleFlowsOldestFirstAndStopsAtTheFirstActiveOne() {
        let table = UDPFlowTable(capacity: 10, lifetimes: UDPFlowLifetimes(unreplied: .seconds(10)))
        for i in 0..<5 { table.insert(v4(i), now: at(i)) }
        table.touch(table.lookup(v4(0))!, now: at(20))  // activity keeps flow 0 alive
        XCTAssertNil(table.expired(now: at(10)), "flow 1 was active at 1 s: idle 9 s only")
        var gone: [FlowKey] = []
        while let slot = table.expired(now: at(13)) {
            gone.append(table.key(at: slot))
            table.remove(slot)
        }
        XCTAssertEqual(gone, [v4(1), v4(2), v4(3)])
        XCTAssertEqual(table.keysByRecency(), [v4(4), v4(0)])
        XCTAssertEqual(table.lastActive(at: table.oldest!), at(4))
        XCTAssertEqual(table.nextExpiry(), at(14))
        while let slot = table.expired(now: at(100)) { table.remove(slot) }
        XCTAssertTrue(table.isEmpty)
        XCTAssertNil(table.oldest)

        let forever = UDPFlowTable(
            capacity: 2,
            lifetimes: UDPFlowLifetimes(unreplied: .seconds(Int64.max), assured: .seconds(Int64.max))
        )
        forever.insert(v4(0), now: at(5))
        XCTAssertNil(forever.nextExpiry(), "an idle time past the clock's end: never")
        XCTAssertNil(forever.expired(now: at(1_000_000)))
    }

    /// The rule that decides a flow's lifetime, datagram by datagram, and what it means for
    /// expiry and eviction.
    func testAFlowIsAssuredByADatagramAfterItsFirstReplyTwoSecondsOrMoreAfterItOpened() {
        let table = UDPFlowTable(
            capacity: 4,
            lifetimes: UDPFlowLifetimes(unreplied: .seconds(30), assured: .seconds(120))
        )
        let slow = table.insert(v4(0), now: at(0)).slot
        XCTAssertFalse(table.touch(slow, now: at(5), reply: true), "a first reply, however late, does not assure")
        XCTAssertFalse(table.isAssured(slow))
        let quick = table.insert(v4(1), now: at(0)).slot
        table.touch(quick, now: at(0), reply: true)
        XCTAssertFalse(table.touch(quick, now: at(1)), "another datagram within 2 s of the start does not")
        XCTAssertFalse(table.touch(quick, now: at(1), reply: true))
        XCTAssertTrue(table.touch(quick, now: at(2)), "one at 2 s, after a reply, does")
        XCTAssertTrue(table.isAssured(quick))
        XCTAssertFalse(table.touch(quick, now: at(3), reply: true), "once")
        let oneWay = table.insert(v4(2), now: at(0)).slot
        for t in 1...10 { XCTAssertFalse(table.touch(oneWay, now: at(t))) }
        XCTAssertFalse(table.isAssured(oneWay), "never a reply: never assured")
        XCTAssertEqual(table.assuredCount, 1)

        XCTAssertEqual(table.oldest, slow, "eviction takes unassured flows first, the assured one last")
        XCTAssertEqual(table.keysByRecency(), [v4(0), v4(2), v4(1)])
        XCTAssertEqual(table.nextExpiry(), at(35))
        var gone: [FlowKey] = []
        while let slot = table.expired(now: at(40)) {
            gone.append(table.key(at: slot))
            table.remove(slot)
        }
        XCTAssertEqual(gone, [v4(0), v4(2)], "30 s after their last datagram")
        XCTAssertEqual(table.nextExpiry(), at(123))
        XCTAssertNil(table.expired(now: at(122)))
        XCTAssertEqual(table.expired(now: at(123)), quick)
        table.remove(quick)
        XCTAssertEqual(table.assuredCount, 0)
        XCTAssertTrue(table.isEmpty)
    }

    /// Answered: as many replies as requests, the last a reply, not assured. A request makes a
    /// flow waiting again, a second reply to one request keeps it out; past `answeredLimit`
    /// `overAnswered` names the oldest answered flow, and the cap takes answered flows first.
    func testAnsweredFlowsAreCountedApartAndNamedOldestFirstPastTheirLimit() {
        let table = UDPFlowTable(capacity: 5, answeredLimit: 1)
        let a = table.insert(v4(0), now: at(0)).slot
        let b = table.insert(v4(1), now: at(0)).slot
        let c = table.insert(v4(2), now: at(0)).slot
        let d = table.insert(v4(3), now: at(0)).slot
        table.touch(a, now: at(0))
        table.touch(a, now: at(0), reply: true, datagrams: 2)
        XCTAssertFalse(table.isAnswered(a), "two replies to one request: a stream, not over")
        table.touch(b, now: at(0))
        table.touch(b, now: at(0))
        table.touch(b, now: at(1), reply: true, datagrams: 2)
        XCTAssertTrue(table.isAnswered(b), "two requests, both answered")
        XCTAssertNil(table.overAnswered)
        table.touch(c, now: at(1))
        table.touch(c, now: at(1), reply: true)
        XCTAssertEqual(table.answeredCount, 2)
        XCTAssertEqual(table.overAnswered, b, "the oldest answered flow")
        table.touch(b, now: at(1))
        XCTAssertFalse(table.isAnswered(b), "a new request: waiting for its answer")
        XCTAssertNil(table.overAnswered)
        XCTAssertEqual(table.keysByRecency(), [v4(2), v4(3), v4(0), v4(1)], "answered first, then waiting")
        XCTAssertEqual(table.oldest, c)
        table.touch(d, now: at(2))
        XCTAssertEqual(table.nextExpiry(assured: false), at(30), "a and d's 30 s, over both unassured lists")
        table.remove(c)
        XCTAssertEqual(table.answeredCount, 0)
        let e = table.insert(v4(4), now: at(3)).slot
        table.touch(e, now: at(3))
        table.touch(e, now: at(3), reply: true)
        XCTAssertEqual(table.insert(v4(5), now: at(3)).evicted, nil)
        XCTAssertEqual(table.insert(v4(6), now: at(4)).evicted, v4(4), "full: the answered flow goes first")
        XCTAssertEqual(table.answeredCount, 0)
    }

    func testRemovedSlotsAreReusedAndLookupsStayRightThroughChurn() {
        // A model check: random inserts, touches and removes against a Dictionary, with a
        // small capacity so that probe chains collide and backward shifts happen all the time.
        let table = UDPFlowTable(capacity: 64)
        var model: [FlowKey: Int] = [:]
        var rng = XorShift(seed: 7)
        for step in 0..<50_000 {
            let key = v4(Int(rng.next() % 200))
            let now = at(step)
            if let slot = table.lookup(key) {
                XCTAssertEqual(model[key], slot)
                if rng.next() % 2 == 0 {
                    table.remove(slot)
                    model[key] = nil
                } else {
                    table.touch(slot, now: now)
                }
            } else {
                XCTAssertNil(model[key], "step \(step): \(key) lost")
                let inserted = table.insert(key, now: now)
                if let evicted = inserted.evicted { model[evicted] = nil }
                XCTAssertNil(model.values.first { $0 == inserted.slot }, "slot \(inserted.slot) handed out twice")
                model[key] = inserted.slot
            }
            XCTAssertEqual(table.count, model.count)
            if table.count != model.count { return }
        }
        for (key, slot) in model { XCTAssertEqual(table.lookup(key), slot) }
    }

    func testOneHundredThousandFlows() {
        let n = 100_000
        let table = UDPFlowTable(capacity: n, lifetimes: UDPFlowLifetimes(unreplied: .nanoseconds(1)))
        let keys = (0..<n).map(v4)
        var slots = [Int](repeating: 0, count: n)
        for i in 0..<n {
            let inserted = table.insert(keys[i], now: Instant(nanoseconds: UInt64(i)))
            XCTAssertNil(inserted.evicted)
            slots[i] = inserted.slot
        }
        XCTAssertEqual(table.count, n)
        XCTAssertTrue(table.isFull)
        var found = 0
        for i in 0..<n where table.lookup(keys[i]) == slots[i] { found += 1 }
        XCTAssertEqual(found, n)

        // Touch the even ones: the odd ones are now the least recently active, oldest first.
        for i in stride(from: 0, to: n, by: 2) { table.touch(slots[i], now: Instant(nanoseconds: UInt64(n + i))) }
        XCTAssertEqual(table.insert(v4(n), now: Instant(nanoseconds: UInt64(3 * n))).evicted, keys[1])

        // Expire what was last active before n: the odd ones, in order (one went already).
        var expired = 0
        var inOrder = true
        while let slot = table.expired(now: Instant(nanoseconds: UInt64(n))) {
            if expired >= n / 2 || table.key(at: slot) != keys[3 + 2 * expired] { inOrder = false }
            table.remove(slot)
            expired += 1
        }
        XCTAssertTrue(inOrder)
        XCTAssertEqual(expired, n / 2 - 1)
        XCTAssertEqual(table.count, n / 2 + 1)
        for i in stride(from: 0, to: n, by: 2) where table.lookup(keys[i]) != slots[i] {
            XCTFail("even flow \(i) lost")
        }
        for i in stride(from: 1, to: n, by: 2) where table.lookup(keys[i]) != nil {
            XCTFail("odd flow \(i) still there")
        }
    }
}

/// A small deterministic generator (xorshift), so a failing churn test fails the same way again.
struct XorShift: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed | 1 }
    mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }
}
