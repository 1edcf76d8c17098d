import Glibc
import LinuxIO
import Logging
import SystemPackage

/// Accepts clients on one listener for one loop and starts a `TCPConnection` for each.
/// Level-triggered. A listener is the loop's own (one SO_REUSEPORT socket per loop: the
/// kernel spreads clients over them), or `shared` by several loops (an adopted socket):
/// then exclusive, so that one loop is woken, and taking turns (see `rejoinLine`).
/// On EMFILE/ENFILE it stops watching the listener for `descriptorPause`, logs once per
/// episode, and tries again: clients wait in the backlog, the CPU does not spin. A client
/// accepted just before the backend socket could not be made waits here too, rather than
/// being reset, and goes first when descriptors are back.
public final class TCPAcceptor: EventHandler {
    package let listener: Listener
    package let target: SocketAddress
    let context: RelayContext
    /// Several loops serve this listener: accept one client per wake-up, then go to the back
    /// of the listener's line of waiting loops, so that the next client wakes another loop.
    /// EPOLLEXCLUSIVE alone wakes the first idle loop in line, every time, and puts every
    /// connection on it.
    private let shared: Bool
    private var id: HandlerID?
    private var paused = false
    /// Accepted clients still without a backend socket, oldest first; owned here.
    private var waiting = DescriptorQueue(capacity: 4)
    /// Its connections still open.
    private let connections: ConnectionGroup
    private var accepting = true
    /// This mapping's counters on this loop, shared with its connections.
    let mapping: MappingCounterBox
    /// A copy of them; on the loop's thread.
    package var counters: MappingCounters { mapping.value }

    /// `options` nil: the loop's PROXY protocol setting, no mapping name in the log lines.
    public init(
        listener: Listener,
        target: SocketAddress,
        context: RelayContext,
        shared: Bool = false,
        options: MappingOptions? = nil
    ) {
        mapping = context.counterBox(
            options: options ?? MappingOptions(proxyProtocol: context.config.proxyProtocol),
            logger: context.logger
        )
        self.listener = listener
        self.target = target
        self.context = context
        self.shared = shared
        connections = ConnectionGroup(loop: context.loop)
    }

    private var interest: Interest { shared ? [.read, .exclusive] : .read }

    public func start() throws(SyscallError) {
        let id = context.loop.attach(self)
        self.id = id
        try context.loop.add(listener.descriptor, interest, for: id, tag: 0)
    }

    /// Stops accepting; established connections go on. Clients still waiting are reset.
    package func stop() {
        // They go on, no longer tracked.
        connections.release()
        tellBulkLoops(drain: nil)
        detach()
    }

    /// Stops accepting at once (the listener leaves this loop and, once nobody else holds it,
    /// closes); the connections it let in get `drain` to finish, and those still open then are
    /// reset. Clients the kernel already let in, waiting in the listener's accept queue, are
    /// accepted first and drained the same way: closing the listener would reset them. Linux
    /// offers no way to stop a listener's queue from filling while keeping what it holds
    /// (shutdown(SHUT_RD) on a listener empties it with resets, as close does; measured), so this
    /// accepts until EAGAIN right before the listener goes; a client that completes its handshake
    /// after that came after the removal and is refused as a closed port refuses.
    package func stop(drain: Duration) {
        if id != nil { acceptQueued() }
        connections.drain(for: drain)
        tellBulkLoops(drain: drain)
        detach()
    }

    /// Its connections that moved to a bulk loop are drained there (or let go, `drain` nil) too: a
    /// message to each, after any connection this loop handed it before.
    private func tellBulkLoops(drain: Duration?) {
        for bulk in context.bulkLoops {
            let message = Handover((bulk, mapping))
            bulk.loop.waker.post {
                let (bulk, mapping) = message.value
                bulk.settleArrivals(from: mapping, drain: drain)
            }
        }
    }

    /// The most clients `stop(drain:)` takes from the queue: more than the listener's backlog
    /// holds, so a flood of new arrivals meanwhile cannot keep the loop here.
    static let drainAcceptLimit = 8192

    private func acceptQueued() {
        // Those that waited for a descriptor go first, in order.
        while let client = waiting.popFirst() {
            if let unserved = serve(client) {
                waiting.prepend(unserved)
                return
            }
        }
        // Out of descriptors, the rest are reset with those still waiting (the pause this
        // starts ends with the acceptor).
        acceptClients(upTo: Self.drainAcceptLimit)
    }

    private func detach() {
        stopAccepting()
        guard let id else { return }
        context.loop.detach(id)
        self.id = nil
    }

    private func stopAccepting() {
        while let client = waiting.popFirst() { Socket.setResetOnClose(client) }
        guard accepting else { return }
        accepting = false
        if id != nil && !paused { context.loop.remove(listener.descriptor) }
    }

    package func teardown(loop: EventLoop) { stop() }

    /// Starts the relay for an accepted client; hands the client back (and pauses accepting)
    /// when the backend socket cannot be made for want of descriptors.
    private func serve(_ client: consuming Descriptor) -> Descriptor? {
        let backend: Descriptor
        do {
            backend = try Socket.make(family: target.family, type: Int32(SOCK_STREAM.rawValue))
        } catch {
            switch error.errno {
            case .tooManyOpenFiles, .tooManyOpenFilesInSystem, .noBufferSpace, .noMemory:
                pause(error)
                return client
            default:
                Socket.setResetOnClose(client)
                mapping.pointer.pointee.refused &+= 1
                return nil
            }
        }
        TCPConnection.start(
            client: client,
            backend: backend,
            target: target,
            context: context,
            mapping: mapping,
            group: connections
        )
        if listener.warned.load(ordering: .relaxed),
            listener.warned.compareExchange(expected: true, desired: false, ordering: .relaxed).exchanged
        {
            mapping.logger.notice("\(listener.address): accepting again")
        }
        return nil
    }

    package func ready(_ readiness: Readiness, tag: UInt8, loop: EventLoop) {
        acceptClients(upTo: shared ? 1 : context.config.acceptBatch)
        if shared && !paused { rejoinLine() }
    }

    private func acceptClients(upTo limit: Int) {
        for _ in 0..<limit {
            let client: Descriptor
            do {
                guard let accepted = try Socket.accept(listener.descriptor) else { return }
                client = accepted
            } catch {
                switch error.errno {
                case .tooManyOpenFiles, .tooManyOpenFilesInSystem, .noBufferSpace, .noMemory:
                    pause(error)
                    return
                default:
                    // ECONNABORTED, EPROTO, ...: that client is gone; the next may be fine.
                    continue
                }
            }
            mapping.pointer.pointee.accepted &+= 1
            if let unserved = serve(client) {
                waiting.append(unserved)
                return
            }
        }
    }

    /// Watches the listener anew, which puts this loop at the back of the listener's wait queue
    /// (the kernel wakes exclusive waiters from the front).
    private func rejoinLine() {
        guard let id else { return }
        context.loop.remove(listener.descriptor)
        do {
            try context.loop.add(listener.descriptor, interest, for: id, tag: 0)
        } catch {
            mapping.logger.error("\(listener.address): cannot watch the listener again: \(error)")
        }
    }

    private func pause(_ error: SyscallError) {
        guard let id, !paused else { return }
        paused = true
        mapping.pointer.pointee.acceptPauses &+= 1
        context.loop.remove(listener.descriptor)
        context.loop.schedule(at: context.loop.now + context.config.descriptorPause, for: id, tag: 0)
        // A fresh clock, not the loop's: loops' batch times differ, and this is shared.
        let now = Instant.now().nanoseconds
        let last = listener.lastExhausted.exchange(now, ordering: .relaxed)
        guard last == 0 || (now > last && now - last > 1_000_000_000) else { return }
        listener.warned.store(true, ordering: .relaxed)
        mapping.logger.warning(
            "\(listener.address): \(error); pausing accept for \(context.config.descriptorPause) (raise the open files limit, ulimit -n)"
        )
    }

    /// Names this mapping's counters among a bulk loop's (`RelayContext.movedInCounters`).
    package var countersID: ObjectIdentifier { ObjectIdentifier(mapping) }

    package func timer(tag: UInt8, loop: EventLoop) {
        guard let id, paused, accepting else { return }
        paused = false
        // Oldest first; paused again, the client still first in line, if descriptors are still short.
        while let client = waiting.popFirst() {
            if let unserved = serve(client) {
                // Still short: back to the front of the line, in its place.
                waiting.prepend(unserved)
                return
            }
        }
        do {
            try loop.add(listener.descriptor, interest, for: id, tag: 0)
        } catch {
            mapping.logger.error("\(listener.address): cannot watch the listener again: \(error)")
            return
        }
        // Level-triggered: if clients wait, the next wait reports it at once.
    }
}

/// The connections one acceptor let in, linked through them, so that when its port is removed
/// those still open after the drain time can be reset. Waits in the loop on its own while
/// draining (the acceptor and its listener are gone by then). A bulk loop keeps one for the
/// connections of each mapping that moved to it.
final class ConnectionGroup: EventHandler {
    private let loop: EventLoop
    private var connections = IntrusiveList<GroupLinks>()
    private var id = HandlerID.none
    /// When the drain time is (or was) up; nil: not draining.
    private var drainDeadline: Instant?
    /// Let go: connections coming back are not tracked.
    private var released = false

    var draining: Bool { drainDeadline != nil }

    init(loop: EventLoop) { self.loop = loop }

    func track(_ c: TCPConnection) {
        c.group = self
        connections.insert(c, after: nil)
    }

    func untrack(_ c: TCPConnection) {
        guard c.group === self else { return }
        connections.remove(c)
        c.group = nil
        // Draining, and the last one is gone: nothing left to wait for.
        if connections.isEmpty && id != .none { finish() }
    }

    /// Lets the connections go on untracked: none may point at a group that is gone.
    func release() {
        released = true
        while let c = connections.first { untrack(c) }
    }

    func drain(for duration: Duration) {
        guard drainDeadline == nil else { return }
        drainDeadline = loop.now + duration
        if !connections.isEmpty { waitForDeadline() }
    }

    /// A connection coming from another loop: tracked as if it had never left. False when its
    /// drain time is up already: the caller resets it.
    func admit(_ c: TCPConnection) -> Bool {
        if released { return true }
        if let drainDeadline, loop.now >= drainDeadline { return false }
        track(c)
        if draining && id == .none { waitForDeadline() }
        return true
    }

    private func waitForDeadline() {
        guard let drainDeadline else { return }
        id = loop.attach(self)
        loop.schedule(at: drainDeadline, for: id, tag: 0)
    }

    func timer(tag: UInt8, loop: EventLoop) {
        while let c = connections.first { c.drainExpired() }
        finish()
    }

    func ready(_ readiness: Readiness, tag: UInt8, loop: EventLoop) {}

    func teardown(loop: EventLoop) { release() }

    private func finish() {
        let attached = id
        id = .none
        loop.detach(attached)
    }
}

/// A connection's links in its acceptor's group.
enum GroupLinks: ListLinks {
    static subscript(_ c: TCPConnection) -> Links<TCPConnection> {
        get { c.groupLinks }
        _modify { yield &c.groupLinks }
    }
}
