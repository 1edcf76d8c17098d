// One event loop per thread. It owns its handlers (listeners, connections, flows) in a
// slot table; epoll's user data carries a token (slot, generation, tag), never a
// retained object, so an event that arrives for a handler detached earlier in the same
// batch, or for a descriptor number reused since (closed and accepted again within one
// batch), is dropped by the generation check. That check is what makes closing at once
// safe: nothing needs to wait for the end of the batch.
//
// Level or edge: the loop offers both; the relay registers connection sockets
// edge-triggered for read and write once, for their whole life, and tracks readiness
// itself. A splice relay must try the I/O until EAGAIN anyway (the pipe, not the socket,
// decides how much moves), so edge triggering costs nothing there and saves every
// epoll_ctl that level triggering would need to stop write interest while a pipe is
// empty: zero epoll_ctl calls per connection in steady state. Listeners stay level-
// triggered: accepting a bounded batch per wake-up, and pausing on EMFILE, is then safe.
//
// Fairness: a handler does a bounded amount of work per wake-up (a connection about one
// pipe per direction). One that stopped with work left keeps its readiness bits and joins
// the ready list; the loop serves that list after each batch, and polls epoll without
// sleeping while it is not empty. A bulk stream then takes turns with every other
// connection instead of starving them, and loses no throughput.
//
// Timers are a binary heap of deadlines with lazy cancellation: a handler keeps its own
// deadline and checks it when woken. Fixed timeouts of many connections (connect, half-
// close) are queues with one heap entry each (Relay's TimeoutQueue), so the heap stays
// small under churn. The epoll_wait timeout is the nearest deadline, so an idle loop
// sleeps with no timer descriptor.
//
// Ownership: the loop holds its handlers; they hold their descriptors. When `run` ends,
// the loop hands every handler `teardown` (close what you own) and forgets them all, so
// nothing it served outlives it: the ports can be bound again at once.

import CBerthLinux
import Glibc
import Synchronization

/// Something the loop wakes: a listener, a connection, a UDP flow table.
package protocol EventHandler: AnyObject {
    /// A descriptor registered with `tag` is ready.
    func ready(_ readiness: Readiness, tag: UInt8, loop: EventLoop)
    /// A deadline scheduled with `tag` passed (maybe one the handler has since moved).
    func timer(tag: UInt8, loop: EventLoop)
    /// Its turn on the ready list came (see `EventLoop.requeue`).
    func resumed(loop: EventLoop)
    /// The loop is stopping: close every descriptor, leave every queue. The handler is
    /// detached already and is not called again.
    func teardown(loop: EventLoop)
}

extension EventHandler {
    package func timer(tag: UInt8, loop: EventLoop) {}
    package func resumed(loop: EventLoop) {}
    package func teardown(loop: EventLoop) {}
}

/// A handler's place in its loop; stale once detached.
package struct HandlerID: Hashable, Sendable {
    let slot: UInt32
    let generation: UInt32

    /// An id that names no handler, for a field set before `attach`.
    package static let none = HandlerID(slot: .max, generation: .max)
}

/// Stops a loop, or hands it work, from any thread.
package final class LoopWaker: Sendable {
    private let stopFlag = Atomic<Bool>(false)
    /// Work posted from other threads, run on the loop's thread at its next wake-up.
    private let inbox = Mutex<[@Sendable () -> Void]>([])
    fileprivate let descriptor: Descriptor

    init() throws(SyscallError) {
        descriptor = Descriptor(taking: try syscall("eventfd") { eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC)) })
    }

    package var stopRequested: Bool { stopFlag.load(ordering: .acquiring) }

    package func stop() {
        stopFlag.store(true, ordering: .releasing)
        wake()
    }

    package func wake() {
        var one: UInt64 = 1
        _ = write(descriptor.raw, &one, 8)
    }

    /// Runs `body` on the loop's thread, after the events of the batch it wakes (runtime
    /// changes: ports added or removed). The control path only: it allocates.
    package func post(_ body: @escaping @Sendable () -> Void) {
        inbox.withLock { $0.append(body) }
        wake()
    }

    /// Forgets work posted and not run yet; what it owned is released (a connection that was on
    /// its way to this loop closes its sockets). When the loop closes: nothing posted may hold
    /// the loop alive through its own waker.
    func dropPosted() {
        let dropped = takePosted()
        withExtendedLifetime(dropped) {}
    }

    func takePosted() -> [@Sendable () -> Void] {
        inbox.withLock { posted in
            defer { posted.removeAll() }
            return posted
        }
    }
}

public final class EventLoop {
    private struct Slot {
        var handler: (any EventHandler)?
        var generation: UInt32
    }

    private struct TimerEntry {
        var deadline: UInt64
        var slot: UInt32
        var generation: UInt32
        var tag: UInt8
    }

    private static let internalSlot: UInt32 = .max
    private static let wakeTag: UInt8 = 0
    private static let signalTag: UInt8 = 1

    private var selector: Selector
    private var slots: [Slot] = []
    private var freeSlots: [UInt32] = []
    private var timers: [TimerEntry] = []
    /// Handlers that stopped with work left, served after the batch (`requeue`); the second
    /// array is the round being served, swapped in so that neither allocates once grown.
    private var readyList: [HandlerID] = []
    private var serving: [HandlerID] = []
    private var signalFD: Descriptor?
    private var onSignal: ((Int32) -> Void)?

    /// Time at the start of the current batch of events.
    package private(set) var now: Instant = .now()
    /// Set, the loop's clock stands at this instant instead of following CLOCK_MONOTONIC: a test
    /// that drives the loop by hand (`runOnce`) moves it on to fire timers, so timeouts are tested
    /// without waiting for them. berth never sets it.
    package var frozenNow: Instant? {
        didSet { if let frozenNow { now = frozenNow } }
    }
    package let waker: LoopWaker

    /// Nanoseconds to poll before sleeping in epoll_wait (0: sleep at once).
    package var busyPoll: UInt64 = 0

    /// Counters of the loop itself, for benchmarks and tests.
    public private(set) var waits: UInt64 = 0
    public private(set) var eventsHandled: UInt64 = 0

    public init(eventCapacity: Int = 256) throws(SyscallError) {
        selector = try Selector(capacity: eventCapacity)
        waker = try LoopWaker()
        try selector.add(waker.descriptor, .read, token: EventLoop.token(EventLoop.internalSlot, 0, EventLoop.wakeTag))
    }

    // MARK: handlers and descriptors

    package func attach(_ handler: any EventHandler) -> HandlerID {
        if let slot = freeSlots.popLast() {
            slots[Int(slot)].handler = handler
            return HandlerID(slot: slot, generation: slots[Int(slot)].generation)
        }
        slots.append(Slot(handler: handler, generation: 0))
        return HandlerID(slot: UInt32(slots.count - 1), generation: 0)
    }

    /// Forgets the handler: its pending events and timers are dropped. Remove or close its
    /// descriptors yourself (a closed descriptor leaves epoll by itself).
    package func detach(_ id: HandlerID) {
        let i = Int(id.slot)
        guard i < slots.count, slots[i].generation == id.generation else { return }
        slots[i].handler = nil
        slots[i].generation = (slots[i].generation &+ 1) & 0xFF_FFFF
        freeSlots.append(id.slot)
    }

    package var handlerCount: Int { slots.count - freeSlots.count }

    /// Calls the handler's `resumed` after this batch, before the loop sleeps again. A handler
    /// queues itself once per round (it keeps a flag); a stale id is dropped.
    package func requeue(_ id: HandlerID) { readyList.append(id) }

    /// Handlers waiting on the ready list.
    public var readyCount: Int { readyList.count }

    package func add(
        _ fd: borrowing Descriptor,
        _ interest: Interest,
        for id: HandlerID,
        tag: UInt8
    ) throws(SyscallError) {
        try selector.add(fd, interest, token: EventLoop.token(id.slot, id.generation, tag))
    }

    package func remove(_ fd: borrowing Descriptor) { selector.remove(fd) }

    @inline(__always)
    private static func token(_ slot: UInt32, _ generation: UInt32, _ tag: UInt8) -> UInt64 {
        UInt64(slot) << 32 | UInt64(generation & 0xFF_FFFF) << 8 | UInt64(tag)
    }

    // MARK: timers

    /// Calls the handler's `timer(tag:)` at or after `deadline`, unless it was detached.
    package func schedule(at deadline: Instant, for id: HandlerID, tag: UInt8) {
        timers.append(TimerEntry(deadline: deadline.nanoseconds, slot: id.slot, generation: id.generation, tag: tag))
        var child = timers.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            if timers[parent].deadline <= timers[child].deadline { break }
            timers.swapAt(parent, child)
            child = parent
        }
    }

    private func popTimer() -> TimerEntry {
        let top = timers[0]
        let last = timers.removeLast()
        if !timers.isEmpty {
            timers[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1
                if left >= timers.count { break }
                var child = left
                if left + 1 < timers.count && timers[left + 1].deadline < timers[left].deadline { child = left + 1 }
                if timers[parent].deadline <= timers[child].deadline { break }
                timers.swapAt(parent, child)
                parent = child
            }
        }
        return top
    }

    package var pendingTimers: Int { timers.count }

    private func timeoutMilliseconds() -> Int32 {
        guard let next = timers.first?.deadline else { return -1 }
        let current = (frozenNow ?? .now()).nanoseconds
        if next <= current { return 0 }
        let ms = (next - current + 999_999) / 1_000_000
        return Int32(min(ms, UInt64(Int32.max)))
    }

    private func fireTimers() {
        let current = now.nanoseconds
        while let first = timers.first, first.deadline <= current {
            let entry = popTimer()
            let i = Int(entry.slot)
            guard i < slots.count, slots[i].generation == entry.generation, let handler = slots[i].handler else {
                continue
            }
            handler.timer(tag: entry.tag, loop: self)
        }
    }

    // MARK: signals

    /// Blocks these signals in the calling thread (and threads it starts later), so that
    /// only a signalfd sees them. Call before starting other threads.
    package static func blockSignals(_ signals: [Int32]) {
        var set = sigset_t()
        sigemptyset(&set)
        for s in signals { sigaddset(&set, s) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// Delivers these (blocked) signals through the loop.
    package func watchSignals(_ signals: [Int32], _ handler: @escaping (Int32) -> Void) throws(SyscallError) {
        var set = sigset_t()
        sigemptyset(&set)
        for s in signals { sigaddset(&set, s) }
        let fd = try syscall("signalfd") { signalfd(-1, &set, Int32(SFD_NONBLOCK | SFD_CLOEXEC)) }
        let owned = Descriptor(taking: fd)  // closed here if it cannot be watched
        try selector.add(owned, .read, token: EventLoop.token(EventLoop.internalSlot, 0, EventLoop.signalTag))
        signalFD = consume owned
        onSignal = handler
    }

    private func readSignals() {
        guard let fd = signalFD?.raw else { return }
        var info = signalfd_siginfo()
        while read(fd, &info, MemoryLayout<signalfd_siginfo>.size) == MemoryLayout<signalfd_siginfo>.size {
            onSignal?(Int32(info.ssi_signo))
        }
    }

    // MARK: running

    /// Runs until `waker.stop()` (from any thread) or `stop()`.
    /// Closes everything the loop owns when it returns, also when it fails.
    package func run() throws(SyscallError) {
        defer { closeAll() }
        while !waker.stopRequested {
            try runOnce(timeoutMilliseconds: -1)  // the nearest timer bounds the wait
        }
    }

    /// Detaches every handler and hands it `teardown`: listeners, connections and flows close;
    /// work posted and not yet run is dropped.
    /// On the loop's thread, or after it ended. The loop can run again, empty.
    package func closeAll() {
        waker.dropPosted()
        var handlers: [any EventHandler] = []
        for i in slots.indices {
            if let handler = slots[i].handler {
                handlers.append(handler)
                detach(HandlerID(slot: UInt32(i), generation: slots[i].generation))
            }
        }
        timers.removeAll()
        readyList.removeAll()
        for handler in handlers { handler.teardown(loop: self) }
        // Teardown may have detached more (a relay's flows): whatever joined meanwhile goes too.
        if handlerCount > 0 { closeAll() }
    }

    package func stop() { waker.stop() }

    /// One wait and everything it woke; `timeoutMilliseconds` caps the wait (timers may shorten it).
    public func runOnce(timeoutMilliseconds limit: Int32) throws(SyscallError) {
        let timerLimit = timeoutMilliseconds()
        var timeout = timerLimit < 0 ? limit : (limit < 0 ? timerLimit : min(limit, timerLimit))
        if !readyList.isEmpty { timeout = 0 }
        waits &+= 1
        var n = 0
        if busyPoll > 0 && timeout != 0 {
            // Poll without sleeping for a while first: waking a sleeping thread costs far more
            // than a poll on a virtual machine. Spends CPU while traffic pauses.
            let until = Instant.now().nanoseconds &+ busyPoll
            repeat {
                n = try selector.wait(timeoutMilliseconds: 0)
            } while n == 0 && Instant.now().nanoseconds < until
        }
        if n == 0 { n = try selector.wait(timeoutMilliseconds: timeout) }
        now = frozenNow ?? .now()
        for i in 0..<n {
            let (token, readiness) = selector.event(i)
            dispatch(token, readiness)
        }
        selector.growIfFull(n)
        eventsHandled &+= UInt64(n)
        fireTimers()
        serveReadyList()
    }

    /// One round: each handler queued before it starts gets one turn; those that queue again
    /// wait for the next round, after the next (non-sleeping) look at epoll.
    private func serveReadyList() {
        guard !readyList.isEmpty else { return }
        swap(&readyList, &serving)
        for id in serving {
            let i = Int(id.slot)
            guard i < slots.count, slots[i].generation == id.generation, let handler = slots[i].handler else {
                continue
            }
            handler.resumed(loop: self)
        }
        serving.removeAll(keepingCapacity: true)
    }

    @inline(__always)
    private func dispatch(_ token: UInt64, _ readiness: Readiness) {
        let slot = UInt32(truncatingIfNeeded: token >> 32)
        let tag = UInt8(truncatingIfNeeded: token)
        if slot == EventLoop.internalSlot {
            if tag == EventLoop.wakeTag {
                var value: UInt64 = 0
                _ = read(waker.descriptor.raw, &value, 8)
                for body in waker.takePosted() { body() }
            } else {
                readSignals()
            }
            return
        }
        let generation = UInt32(truncatingIfNeeded: token >> 8) & 0xFF_FFFF
        let i = Int(slot)
        guard i < slots.count, slots[i].generation == generation, let handler = slots[i].handler else { return }
        handler.ready(readiness, tag: tag, loop: self)
    }
}
