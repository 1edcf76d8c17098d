import LinuxIO

/// Connections waiting out one fixed timeout (connect, half-close), in deadline order.
///
/// Every connection of a loop gets the same duration, so deadlines arrive in order and the
/// queue is a linked list through the connections themselves: joining and leaving are O(1)
/// and allocate nothing, and the loop's timer heap holds one entry for the whole queue. A
/// connection that leaves (connected, closed) takes its deadline with it; a timer per
/// connection would stay in the heap until it expired, an hour for the half-close timeout,
/// and pile up under connection churn.
final class TimeoutQueue: EventHandler {
    private let loop: EventLoop
    private let timeout: Duration
    /// The tag the connections' `timer(tag:)` is called with.
    private let tag: UInt8
    private var id = HandlerID.none
    private var connections = IntrusiveList<QueueLinks>()
    /// The earliest loop timer pending, if any: never later than the head's deadline.
    private var armedAt: Instant?

    init(loop: EventLoop, timeout: Duration, tag: UInt8) {
        self.loop = loop
        self.timeout = timeout
        self.tag = tag
    }

    /// Joins at the tail, due `timeout` after `since` (the loop's now, or a connection's last
    /// activity when it comes back for another round). A deadline earlier than the tail's
    /// walks back to its place: rare, and short.
    func join(_ c: TCPConnection, since: Instant) {
        // A connection waits in one queue at a time.
        c.queue?.leave(c)
        c.queue = self
        c.queueDeadline = since + timeout
        var after = connections.last
        while let a = after, c.queueDeadline < a.queueDeadline { after = connections.previous(a) }
        connections.insert(c, after: after)
        arm()
    }

    func leave(_ c: TCPConnection) {
        guard c.queue === self else { return }
        connections.remove(c)
        c.queue = nil
    }

    /// A connection that walked back to the head may be due before the pending timer: then it
    /// gets one of its own (the later one fires to no effect).
    private func arm() {
        guard let first = connections.first else { return }
        if let pending = armedAt, pending <= first.queueDeadline { return }
        if id == .none { id = loop.attach(self) }
        armedAt = first.queueDeadline
        loop.schedule(at: first.queueDeadline, for: id, tag: 0)
    }

    func ready(_ readiness: Readiness, tag: UInt8, loop: EventLoop) {}

    /// The loop stops: the connections are torn down by the loop too; let go of them.
    func teardown(loop: EventLoop) {
        while let first = connections.first { leave(first) }
        id = .none
        armedAt = nil
    }

    /// Hands every connection whose deadline passed to its `timer(tag:)`, out of the queue
    /// (it may join again), then waits for the next deadline.
    func timer(tag _: UInt8, loop: EventLoop) {
        if let pending = armedAt, pending <= loop.now { armedAt = nil }
        while let first = connections.first, first.queueDeadline <= loop.now {
            leave(first)
            first.timer(tag: tag, loop: loop)
        }
        arm()
    }
}

/// A connection's links in its timeout queue.
enum QueueLinks: ListLinks {
    static subscript(_ c: TCPConnection) -> Links<TCPConnection> {
        get { c.queueLinks }
        _modify { yield &c.queueLinks }
    }
}
