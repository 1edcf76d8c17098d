// The loop's ready list, its generation check across descriptor reuse, its teardown, and the
// owned descriptor lists.

import Glibc
import LinuxIO
import TestSupport
import XCTest

/// Counts what the loop hands it; `onReady`/`onResumed` act on it.
private final class Probe: EventHandler {
    var events = 0
    var resumes = 0
    var tornDown = 0
    var onReady: ((Probe, EventLoop) -> Void)?
    var onResumed: ((Probe, EventLoop) -> Void)?
    func ready(_ readiness: Readiness, tag: UInt8, loop: EventLoop) {
        events += 1
        onReady?(self, loop)
    }
    func resumed(loop: EventLoop) {
        resumes += 1
        onResumed?(self, loop)
    }
    func teardown(loop: EventLoop) { tornDown += 1 }
}

private func makePipe() -> (read: Int32, write: Int32) {
    var fds: [Int32] = [-1, -1]
    XCTAssertEqual(pipe(&fds), 0)
    for fd in fds { _ = fcntl(fd, F_SETFL, O_NONBLOCK) }
    return (fds[0], fds[1])
}

private func poke(_ fd: Int32) {
    var b: UInt8 = 1
    _ = write(fd, &b, 1)
}

final class LoopOwnershipTests: XCTestCase {
    /// A handler that always has work left never makes the loop sleep, and never keeps another
    /// handler's event waiting for more than one round.
    func testTheReadyListKeepsTheLoopAwakeAndTakesTurnsWithEvents() throws {
        let loop = try EventLoop()
        let busy = Probe()
        let busyID = loop.attach(busy)
        busy.onResumed = { _, loop in loop.requeue(busyID) }
        let other = Probe()
        let otherID = loop.attach(other)
        let (r, w) = makePipe()
        defer {
            close(r)
            close(w)
        }
        try loop.add(r, .read, for: otherID, tag: 0)
        loop.requeue(busyID)
        // Nothing is ready and no timer is due: the loop must still not sleep while the ready
        // list holds someone. The write comes only once that round is over; a loop that slept
        // instead is woken by it after 10 s, and comes back with the pipe's event.
        let roundOver = Semaphore()
        let late = try LoopThread(name: "late-write") {
            _ = roundOver.wait(until: Semaphore.deadline(after: .seconds(10)))
            poke(w)
        }
        try loop.runOnce(timeoutMilliseconds: -1)
        XCTAssertEqual(busy.resumes, 1)
        XCTAssertEqual(other.events, 0, "the loop slept in epoll_wait with a handler on the ready list")
        roundOver.signal()
        late.join()
        // Now the event is there: it is served in the next round, beside one more turn.
        try loop.runOnce(timeoutMilliseconds: -1)
        XCTAssertEqual(other.events, 1)
        XCTAssertEqual(busy.resumes, 2, "one turn per round, not a loop within the round")
        loop.closeAll()
    }

    /// One batch holds events for A and B. A's handler closes B's descriptor and opens a new
    /// one that gets B's number back, for a new handler C. B's event, still in the batch, goes
    /// to nobody: not to B (detached), not to C (another generation).
    func testAStaleEventForAReusedDescriptorNumberIsDropped() throws {
        let loop = try EventLoop()
        let a = Probe()
        let b = Probe()
        let c = Probe()
        let aID = loop.attach(a)
        let bID = loop.attach(b)
        let pa = makePipe()
        var pb = makePipe()
        defer {
            close(pa.read)
            close(pa.write)
            close(pb.read)
            close(pb.write)
        }
        try loop.add(pa.read, .read, for: aID, tag: 0)
        try loop.add(pb.read, .read, for: bID, tag: 0)
        poke(pa.write)
        poke(pb.write)
        var reusedNumber = false
        // Whichever of A and B goes first in the batch swaps the other out.
        let swap: (Probe, EventLoop) -> Void = { probe, loop in
            guard c.events == 0, probe === a || probe === b, a.events + b.events == 1 else { return }
            let victim = probe === a ? bID : aID
            let victimFD = probe === a ? pb.read : pa.read
            loop.detach(victim)
            close(victimFD)
            let fresh = makePipe()
            reusedNumber = fresh.read == victimFD
            let cID = loop.attach(c)
            try? loop.add(fresh.read, .read, for: cID, tag: 0)
            poke(fresh.write)
            if probe === a {
                pb = fresh
            } else {
                close(pa.write)
                close(fresh.write)
                pb = (fresh.read, pb.write)
            }
        }
        a.onReady = swap
        b.onReady = swap
        try loop.runOnce(timeoutMilliseconds: 1000)
        XCTAssertTrue(reusedNumber, "the new descriptor did not get the old number: the test proves nothing")
        XCTAssertEqual(a.events + b.events, 1, "the detached handler got its stale event")
        XCTAssertEqual(c.events, 0, "the new handler got the old descriptor's event")
        try loop.runOnce(timeoutMilliseconds: 1000)
        XCTAssertEqual(c.events, 1, "the new handler's own event comes in the next batch")
    }

    /// Stopping hands every handler `teardown` and forgets them.
    func testRunEndsByTearingDownEveryHandler() throws {
        let loop = try EventLoop()
        let probes = (0..<5).map { _ in Probe() }
        for p in probes { _ = loop.attach(p) }
        loop.stop()
        try loop.run()
        XCTAssertEqual(probes.map(\.tornDown), [1, 1, 1, 1, 1])
        XCTAssertEqual(loop.handlerCount, 0)
    }

    func testDescriptorQueueIsFirstInFirstOutAndClosesWhatIsLeft() throws {
        let before = openDescriptorCount()
        var numbers: [Int32] = []
        do {
            var queue = DescriptorQueue(capacity: 2)
            for _ in 0..<5 {
                let d = Descriptor(taking: dup(0))
                numbers.append(d.raw)
                queue.append(d)
            }
            XCTAssertEqual(openDescriptorCount(), before + 5)
            guard let first = queue.popFirst() else { return XCTFail("empty") }
            XCTAssertEqual(first.raw, numbers[0])
            queue.prepend(first)
            XCTAssertEqual(queue.first, numbers[0], "put back in front")
            XCTAssertEqual(queue.popLast()?.raw, numbers[4])
            XCTAssertEqual(openDescriptorCount(), before + 4, "the one taken out closed when dropped")
        }
        XCTAssertEqual(openDescriptorCount(), before, "the queue closed the rest")
    }

    func testDescriptorSlotsHandOverAndCloseWhatIsLeft() throws {
        let before = openDescriptorCount()
        do {
            let slots = DescriptorSlots(capacity: 8)
            XCTAssertTrue(slots.put(Descriptor(taking: dup(0)), at: 3))
            XCTAssertTrue(slots.put(Descriptor(taking: dup(0)), at: 5))
            let held = slots.with(5) { $0.raw }
            // An occupied slot keeps its own; the one handed in is closed, not leaked, and no trap.
            XCTAssertFalse(slots.put(Descriptor(taking: dup(0)), at: 5))
            XCTAssertEqual(slots.with(5) { $0.raw }, held)
            XCTAssertEqual(openDescriptorCount(), before + 2)
            XCTAssertNotNil(slots.with(3) { $0.raw })
            XCTAssertNil(slots.with(4) { $0.raw }, "an empty slot lends nothing")
            if let d = slots.take(3) { d.close() } else { XCTFail("slot 3 was empty") }
            XCTAssertNil(slots.with(3) { $0.raw }, "taken out")
            if slots.take(3) != nil { XCTFail("slot 3 handed out twice") }
            XCTAssertEqual(openDescriptorCount(), before + 1)
        }
        XCTAssertEqual(openDescriptorCount(), before)
    }
}
