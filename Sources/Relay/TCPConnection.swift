// Theory of operation: one connection, two sides, side 0 the client and side 1 the backend.
// A side is a socket and the stream read from it: bytes move from a side's socket into its
// pipe with splice(2), and from its pipe into the other side's socket. Both streams run
// through one code path (`pump(from:to:)`); nothing is written twice for client and backend.
// A pipe comes from the loop's pool when a read is about to happen and goes back as soon as
// it is empty, so an idle connection holds only its two sockets.
//
// Both sockets are registered once, edge-triggered, for read, write and read-hangup; each
// side keeps `readable`/`writable` bits, set by events and cleared by EAGAIN. Backpressure
// needs no epoll_ctl: a stream whose pipe cannot drain stops reading, and the next write
// edge on its target resumes it.
//
// Fairness: a wake-up moves at most about one pipe's worth per stream (`budget`). A stream
// that still could move keeps its bits and the connection joins the loop's ready list, to
// go on after every other connection woken meanwhile had its turn.
//
// A splice into a pipe can fail with EAGAIN because the pipe ran out of slots even though
// its byte count says there is room; so EAGAIN on the read side clears `readable` only
// when the pipe is empty (then it must have been the socket). Otherwise the read is tried
// again after the pipe drains.
//
// Per-side state bits:
// - `readDone`: read returned 0 (FIN) or failed (reset): nothing more comes from it.
// - `finForwarded`: its stream ended and its pipe drained, so the other socket got
//   shutdown(SHUT_WR): half-close, the other stream keeps flowing. When both are forwarded
//   the connection closes, and close(2) sends the last FIN.
// - `failed`: the socket reported an error (the peer reset it, or refused a write). It takes
//   no more bytes. What it had sent before the error is still readable (Linux keeps a reset
//   socket's receive queue), and it goes to the other side first; then the other side is
//   reset too. A reset travels both ways, after the data in front of it.
// A refused or timed-out backend resets the client.
//
// Errors arrive as EPOLLERR, which sets both bits of that side: the next read or write on it
// reports the error in order, after the data that came before it. No call asks SO_ERROR
// while relaying.
//
// Bulk and interactive: a connection that moves `bulkAfter` bytes within one `bulkWindow` is
// handed to a bulk loop, whose thread runs at a lower scheduling weight, and comes back to the
// loop that accepted it (its home) after a whole window with less. Under bulk a loop's thread
// never sleeps and waits in the CPU run queue with everything it serves; an interactive loop
// keeps sleeping in epoll_wait, so a woken thread runs at once. A move hands over everything:
// the connection leaves loop A (its sockets leave A's epoll, its id goes stale, it leaves A's
// half-close queue and its acceptor's group), travels as the one owner of its state (sockets,
// pipes with their bytes, the bits of every side) in a message through B's waker, and on B
// registers again, joins B's queue and group, and relays once (edge-triggered events that came
// meanwhile were reported to nobody). Only relaying connections move: the PROXY header went out
// before the first byte. Counters: a connection counts in its home acceptor's box at home and in
// the bulk loop's box for that mapping (`RelayContext.arrivals`) there; a scrape sums them. A
// pipe goes back to the pool of the loop that holds the connection when it empties.
//
// Small messages take the copy path (`copySmall`, two system calls where splice needs
// three). If no pipe can be had (out of descriptors), or splice is off or not supported,
// a stream copies through the loop's scratch buffer with MSG_PEEK: peek, send, then
// consume exactly what was sent, so no byte is held in userspace between events.

import Glibc
import LinuxIO
import Logging
import SystemPackage

final class TCPConnection: EventHandler {
    private enum Phase { case connecting, relaying, closed }

    private static let interest: Interest = [.read, .write, .readHangup, .edge]
    /// Reads up to this size copy instead of splicing (see `copySmall`).
    private static let smallCopy = 16 << 10
    static let connectTimerTag: UInt8 = 0
    static let halfCloseTimerTag: UInt8 = 1

    /// The loop it is on now, and the counters it counts in there (see "Bulk and interactive").
    /// Written only when it moves, between loops; unchecked, as they are read on every event.
    @exclusivity(unchecked) private var context: RelayContext
    @exclusivity(unchecked) private var mapping: MappingCounterBox
    /// The loop that accepted it and its acceptor's counters (held: a connection may outlive its
    /// acceptor) and group, where it comes back to.
    private let home: RelayContext
    private let homeMapping: MappingCounterBox
    private var homeGroup: ConnectionGroup?
    /// Bytes delivered in the window that began at `windowStart`, to tell bulk from interactive.
    private var windowBytes = 0
    private var windowStart: Instant
    /// The last window went by with less than `bulkAfter`, or a whole window with nothing.
    private var quiet = false
    private var id: HandlerID
    private var phase: Phase
    /// Side 0, the client, and side 1, the backend (their epoll tags).
    private var sides: Sides
    /// Streams copy instead of splicing: splice is off, or the kernel does not support it here.
    private var copyOnly: Bool
    /// Waiting on the loop's ready list for another turn.
    private var onReadyList = false
    private var lastActivity: Instant
    /// Links of the `TimeoutQueue` the connection waits in, if any (connecting, or half-closed).
    unowned(unsafe) var queue: TimeoutQueue?
    var queueLinks = Links<TCPConnection>()
    var queueDeadline = Instant(nanoseconds: 0)
    /// Links of its acceptor's `ConnectionGroup`, which resets those still open when a removed
    /// port's drain time is up.
    unowned(unsafe) var group: ConnectionGroup?
    var groupLinks = Links<TCPConnection>()

    private init(
        client: consuming Descriptor,
        backend: consuming Descriptor,
        context: RelayContext,
        mapping: MappingCounterBox,
        connected: Bool
    ) {
        self.context = context
        self.mapping = mapping
        home = context
        homeMapping = mapping
        sides = Sides(client: client, backend: backend)
        copyOnly = !context.config.splice
        phase = connected ? .relaying : .connecting
        lastActivity = context.loop.now
        windowStart = lastActivity
        id = HandlerID.none
    }

    /// Connects `backend` (a fresh socket of the target's family) to `target` for an accepted
    /// client and relays once it answers; a backend that refuses at once resets the client.
    static func start(
        client: consuming Descriptor,
        backend: consuming Descriptor,
        target: SocketAddress,
        context: RelayContext,
        mapping: MappingCounterBox,
        group: ConnectionGroup? = nil
    ) {
        // The client inherits TCP_NODELAY from its listener (Listener.tcp sets it there).
        Socket.setNoDelay(backend)
        let connected: Bool
        do {
            connected = try Socket.connect(backend, target) == .connected
        } catch {
            Socket.setResetOnClose(client)
            mapping.pointer.pointee.refused &+= 1
            mapping.logger.debug("connect \(target): \(error)")
            return
        }
        let connection = TCPConnection(
            client: client,
            backend: backend,
            context: context,
            mapping: mapping,
            connected: connected
        )
        group?.track(connection)
        connection.homeGroup = group
        connection.register()
        if connected && connection.phase == .relaying && !connection.sendProxyHeader() { connection.close(reset: true) }
    }

    private func register() {
        guard attach() else { return }
        if phase == .connecting { context.connecting.join(self, since: context.loop.now) }
    }

    /// Joins the current loop and its epoll; false (and reset) if the sockets cannot be watched.
    private func attach() -> Bool {
        let loop = context.loop
        id = loop.attach(self)
        mapping.pointer.pointee.active += 1
        if context.isBulk { mapping.pointer.pointee.bulk += 1 }
        do {
            for tag in Sides.tags {
                try sides.with(tag) { (s) throws(SyscallError) in
                    try loop.add(s.socket, Self.interest, for: id, tag: tag)
                }
            }
        } catch {
            mapping.logger.warning("\(error)")
            close(reset: true)
            return false
        }
        return true
    }

    // MARK: events

    func ready(_ readiness: Readiness, tag: UInt8, loop: EventLoop) {
        sides.update(tag) { $0.note(readiness) }
        if phase == .connecting {
            // The client's bytes (and even its reset) wait until the backend answers.
            guard tag == 1, readiness.writable || readiness.error else { return }
            // Success is a plain write edge; a refusal also sets EPOLLERR, so only then ask SO_ERROR.
            if readiness.error || readiness.hangup, let error = Socket.pendingError(sides.backend.socket) {
                mapping.pointer.pointee.refused &+= 1
                mapping.logger.debug("connect: \(SyscallError.text(error))")
                sides.backend.failed = true
                Socket.setResetOnClose(sides.client.socket)
                close(reset: false)
                return
            }
            context.connecting.leave(self)
            phase = .relaying
            guard sendProxyHeader() else {
                close(reset: true)
                return
            }
        }
        relay()
    }

    func resumed(loop: EventLoop) {
        onReadyList = false
        relay()
    }

    func timer(tag: UInt8, loop: EventLoop) {
        switch (tag, phase) {
        case (Self.connectTimerTag, .connecting):
            mapping.pointer.pointee.connectTimeouts &+= 1
            mapping.logger.debug("connect: timed out after \(context.config.connectTimeout)")
            close(reset: true)
        case (Self.halfCloseTimerTag, .relaying):
            if loop.now < lastActivity + context.config.halfCloseTimeout {
                context.halfClosed.join(self, since: lastActivity)
            } else {
                mapping.pointer.pointee.halfCloseTimeouts &+= 1
                close(reset: true)
            }
        default:
            break
        }
    }

    /// The loop stops: what is still open is reset, never passed off as a clean end.
    func teardown(loop: EventLoop) { close(reset: true) }

    /// Its port was removed and the drain time is up.
    func drainExpired() {
        mapping.pointer.pointee.drainResets &+= 1
        close(reset: true)
    }

    /// The PROXY protocol header, if asked for: one send on the fresh backend connection, before
    /// any byte of the client's and whether or not the client has sent any (server-first
    /// protocols). False when it could not go out whole: then the connection is reset.
    private func sendProxyHeader() -> Bool {
        guard let version = mapping.options.proxyProtocol else { return true }
        guard let client = try? Socket.peerAddress(sides.client.socket),
            let local = try? Socket.localAddress(sides.client.socket)
        else {
            mapping.logger.debug("PROXY header: the client's addresses are gone")
            return false
        }
        let buffer = context.scratch
        let length = ProxyHeader.write(version, stream: true, source: client, destination: local, into: buffer)
        guard let base = buffer.baseAddress,
            case .done(let sent)? = try? Socket.send(sides.backend.socket, from: base, count: length),
            sent == length
        else {
            mapping.logger.warning("PROXY header to the backend did not go out whole; resetting the connection")
            return false
        }
        return true
    }

    // MARK: moving bytes

    private func relay() {
        guard phase == .relaying else { return }
        let moves = context.movesBulk
        if moves { startWindow() }
        var up = sides.pair(0) { pump(from: &$0, to: &$1) }
        let down = sides.pair(1) { pump(from: &$0, to: &$1) }
        if sides.client.failed && !sides.client.readDone && sides.client.readable {
            // A write to the client failed after its stream had its turn: read it out now.
            let again = sides.pair(0) { pump(from: &$0, to: &$1) }
            up = (up.moved || again.moved, again.more)
        }
        if up.moved || down.moved { lastActivity = context.loop.now }

        if sides.anyFailed {
            // The stream of a failed side goes out first; then the reset goes both ways.
            if sides.client.delivered(toFailedPeer: sides.backend.failed)
                && sides.backend.delivered(toFailedPeer: sides.client.failed)
            {
                mapping.pointer.pointee.resets &+= 1
                close(reset: true)
                return
            }
        } else {
            for tag in Sides.tags { sides.pair(tag) { forwardFIN(from: &$0, to: &$1) } }
            if sides.client.finForwarded && sides.backend.finForwarded {
                close(reset: false)
                return
            }
        }
        if moves && shouldMove() {
            move(to: context.isBulk ? home : context.nextBulkLoop())
            return
        }
        if up.more || down.more {
            if !onReadyList {
                onReadyList = true
                mapping.pointer.pointee.yields &+= 1
                context.loop.requeue(id)
            }
        }
        // Half-closed, or draining towards a reset: bounded by the half-close timeout.
        if queue == nil && (sides.client.finForwarded || sides.backend.finForwarded || sides.anyFailed) {
            context.halfClosed.join(self, since: lastActivity)
        }
    }

    /// Moves at most about one pipe's worth from `s` to `t`: `moved` if any byte went, `more`
    /// if the budget ran out while `s` could still be read.
    @inline(__always)
    private func pump(from s: inout Side, to t: inout Side) -> (moved: Bool, more: Bool) {
        var moved = false
        var budget = context.pipes.budget
        // The first read of a wake-up may copy (see `copySmall`); bulk goes on with splice.
        var copyFirst = true
        while true {
            var progressed = false
            let wantsRead = !s.readDone && !t.failed && s.readable && budget > 0
            if wantsRead && (!s.hasPipe || s.buffered < s.capacity) {
                // A small message that goes out whole needs no pipe: copySmall takes one only for
                // what the target did not take, from the pool's idle ones (it cannot fail then).
                let copiesFirst = copyFirst && s.buffered == 0 && t.writable
                let pipeLater = copiesFirst && !copyOnly && context.pipes.idle > 0
                if !s.hasPipe && !copyOnly && !pipeLater {
                    do {
                        s.pipe = try context.pipes.take()
                    } catch {
                        // Out of descriptors: copy instead, holding nothing between events.
                        mapping.pointer.pointee.copyFallbacks &+= 1
                    }
                }
                if !s.hasPipe && !pipeLater {
                    let n = copy(from: &s, to: &t, budget: budget)
                    budget -= n
                    return (moved || n > 0, budget <= 0 && s.readable && !s.readDone && t.writable)
                }
                if copiesFirst {
                    let n = copySmall(from: &s, to: &t)
                    progressed = n > 0
                    budget -= n
                    copyFirst = n == 0 || !s.readable
                } else {
                    mapping.pointer.pointee.spliceCalls &+= 1
                    do {
                        switch try s.fillPipe(length: s.capacity - s.buffered) {
                        case .done(0):
                            s.readDone = true
                        case .done(let n):
                            s.buffered += n
                            budget -= n
                            progressed = true
                        case .wouldBlock:
                            if s.buffered == 0 { s.readable = false }
                        }
                    } catch {
                        if error.errno == .invalidArgument && s.buffered == 0 {
                            // Not a socket splice supports: copy from now on.
                            copyOnly = true
                            continue
                        }
                        fail(&s, error, reading: true)
                    }
                }
            }
            if s.buffered > 0 && t.writable && !t.failed {
                mapping.pointer.pointee.spliceCalls &+= 1
                do {
                    switch try s.drainPipe(into: t.socket, length: s.buffered) {
                    case .done(let n):
                        s.buffered -= n
                        delivered(n, to: t)
                        progressed = true
                    case .wouldBlock:
                        t.writable = false
                    }
                } catch {
                    fail(&t, error, reading: false)
                }
            }
            if !progressed { break }
            moved = true
        }
        // An empty pipe goes back to the pool; one holding bytes for a failed side is closed.
        if s.hasPipe && (s.buffered == 0 || t.failed) {
            if let p = s.pipe.take(), s.buffered == 0 { context.pipes.give(p) }
        }
        return (moved, budget <= 0 && s.readable && !s.readDone && !t.failed)
    }

    /// A side's socket failed: it takes nothing more. A failed read ends its stream; after a
    /// failed write it is read to its end (what it sent before the error, then the error or
    /// EOF), so that its last bytes are not lost.
    private func fail(_ side: inout Side, _ error: SyscallError, reading: Bool) {
        if !side.failed { mapping.logger.trace("fd \(side.socket.raw): \(error)") }
        side.failed = true
        side.writable = false
        if reading { side.readDone = true } else if !side.readDone { side.readable = true }
    }

    /// Counts bytes the target took.
    @inline(__always)
    private func delivered(_ n: Int, to t: borrowing Side) {
        windowBytes &+= n
        if t.tag == 1 {
            mapping.pointer.pointee.bytesToBackend &+= UInt64(n)
        } else {
            mapping.pointer.pointee.bytesToClient &+= UInt64(n)
        }
    }

    /// Half-close: the source's EOF reaches the target once nothing of it waits in the pipe.
    /// When the other stream is done already, the connection closes next and close(2) sends
    /// the FIN: both sockets were read to their end, so it is a FIN, not a reset. The half-close
    /// timeout counts from here, not from the last byte before a long quiet spell.
    private func forwardFIN(from s: inout Side, to t: inout Side) {
        guard s.readDone && s.buffered == 0 && !s.finForwarded else { return }
        s.finForwarded = true
        lastActivity = context.loop.now
        if !t.finForwarded { Socket.shutdownWrite(t.socket) }
    }

    /// Small messages: recv into the loop's buffer and send at once. Two system calls where splice
    /// needs three (in, out, and the EAGAIN that proves the socket empty): a TCP recv that returns
    /// less than asked has emptied the receive queue, so the next data brings a new edge. If the
    /// peer's FIN was already reported (`hangup`), that short read reached it: EOF, without the
    /// recv that would return 0 (a connection-per-request client saves one a side). What the
    /// target does not take goes into the (empty) pipe, which keeps the order: the side's, or
    /// one of the pool's idle pipes (the caller saw one there), so a request that goes out whole
    /// moves no pipe in or out of the pool. A full read means bulk: the caller goes on with
    /// splice. Returns the bytes read.
    private func copySmall(from s: inout Side, to t: inout Side) -> Int {
        let capacity = s.hasPipe ? s.capacity : context.pipes.budget
        let want = min(Self.smallCopy, capacity, context.scratch.count)
        guard let buffer = context.scratch.baseAddress else { return 0 }
        mapping.pointer.pointee.copyCalls &+= 1
        let n: Int
        do {
            switch try Socket.receive(s.socket, into: buffer, count: want) {
            case .done(0):
                s.readDone = true
                return 0
            case .done(let got):
                n = got
            case .wouldBlock:
                s.readable = false
                return 0
            }
        } catch {
            fail(&s, error, reading: true)
            return 0
        }
        var sent = 0
        do {
            switch try Socket.send(t.socket, from: buffer, count: n) {
            case .done(let took): sent = took
            case .wouldBlock: t.writable = false
            }
        } catch {
            // The target is gone: these bytes can never reach it.
            fail(&t, error, reading: false)
            return n
        }
        if sent < n {
            // Into the empty pipe, which holds at least `want` bytes: nothing is lost or reordered.
            let rest = n - sent
            if !s.hasPipe { s.pipe = try? context.pipes.take() }
            let stashed = s.stash(buffer + sent, count: rest)
            if stashed < rest {
                // Cannot happen with a pipe this size; if it does, this connection alone is reset.
                mapping.logger.error(
                    "fd \(s.socket.raw): an empty pipe took \(stashed) of \(rest) bytes; resetting the connection"
                )
                s.failed = true
                t.failed = true
                s.readDone = true
                t.readDone = true
                return n
            }
            s.buffered = rest
            t.writable = false
            mapping.pointer.pointee.copyStashes &+= 1
        }
        delivered(sent, to: t)
        // Short: the receive queue is empty. If the peer's FIN is in already, nothing follows it;
        // after an error the next read reports it (and resets the other side).
        if n < want && !s.errored {
            if s.hangup { s.readDone = true } else { s.readable = false }
        }
        return n
    }

    /// The fallback without a pipe: peek, send, consume what was sent. Returns the bytes moved.
    private func copy(from s: inout Side, to t: inout Side, budget: Int) -> Int {
        guard let buffer = context.scratch.baseAddress else { return 0 }
        var moved = 0
        while s.readable && t.writable && !s.readDone && !t.failed && moved < budget {
            let peeked: Int
            do {
                switch try Socket.peek(s.socket, into: buffer, count: context.scratch.count) {
                case .done(0):
                    s.readDone = true
                    return moved
                case .done(let n):
                    peeked = n
                case .wouldBlock:
                    s.readable = false
                    return moved
                }
            } catch {
                fail(&s, error, reading: true)
                return moved
            }
            let sent: Int
            do {
                switch try Socket.send(t.socket, from: buffer, count: peeked) {
                case .done(let n): sent = n
                case .wouldBlock:
                    t.writable = false
                    return moved
                }
            } catch {
                fail(&t, error, reading: false)
                return moved
            }
            // Consumes exactly what went out; the peeked bytes are still first in the queue.
            _ = try? Socket.receive(s.socket, into: buffer, count: sent)
            delivered(sent, to: t)
            moved += sent
        }
        return moved
    }

    // MARK: moving between loops

    /// A new window once the current one is over; was it quiet?
    private func startWindow() {
        let window = context.config.bulkWindow
        let now = context.loop.now
        guard now >= windowStart + window else { return }
        quiet = windowBytes < context.config.bulkAfter || now >= windowStart + window + window
        windowStart = now
        windowBytes = 0
    }

    /// Bulk on an interactive loop, or quiet on a bulk loop. Not while its port drains (its
    /// group's timer is on this loop) or with a failed side (it closes soon).
    private func shouldMove() -> Bool {
        if group?.draining == true || sides.anyFailed { return false }
        if context.isBulk { return quiet && windowBytes < context.config.bulkAfter }
        return windowBytes >= context.config.bulkAfter
    }

    /// Leaves this loop, nothing of it left here, and travels to `destination` as a message
    /// that owns it (see "Bulk and interactive").
    private func move(to destination: RelayContext) {
        let loop = context.loop
        for tag in Sides.tags { sides.with(tag) { loop.remove($0.socket) } }
        loop.detach(id)
        id = .none
        onReadyList = false
        // Connecting connections never move: a queue here is the half-close one.
        let halfClosed = queue != nil
        queue?.leave(self)
        let tracked = group != nil
        group?.untrack(self)
        mapping.pointer.pointee.active -= 1
        mapping.pointer.pointee.moves &+= 1
        if context.isBulk { mapping.pointer.pointee.bulk -= 1 }
        let message = Handover((self, destination))
        destination.loop.waker.post {
            let (connection, destination) = message.value
            connection.arrive(on: destination, halfClosed: halfClosed, tracked: tracked)
        }
    }

    /// On `destination`'s thread: joins its loop, queue and group, and relays what waited.
    private func arrive(on destination: RelayContext, halfClosed: Bool, tracked: Bool) {
        context = destination
        var admitted = true
        if destination.isBulk {
            let arrivals = destination.arrivals(from: homeMapping)
            mapping = arrivals.mapping
            if tracked { admitted = arrivals.group.admit(self) }
        } else {
            mapping = homeMapping
            if tracked, let homeGroup { admitted = homeGroup.admit(self) }
        }
        windowStart = destination.loop.now
        windowBytes = 0
        quiet = false
        guard attach() else { return }
        guard admitted else {
            // Its port was removed and the drain time ran out while it travelled.
            drainExpired()
            return
        }
        if halfClosed { context.halfClosed.join(self, since: lastActivity) }
        relay()
    }

    // MARK: closing

    /// Dropped unclosed: it was on its way to a loop that closed before taking it. What is still
    /// open is reset, as a stopping loop resets what it owned; the sockets close as it goes.
    deinit {
        if phase != .closed {
            for tag in Sides.tags { sides.with(tag) { Socket.setResetOnClose($0.socket) } }
        }
    }

    private func close(reset: Bool) {
        guard phase != .closed else { return }
        phase = .closed
        queue?.leave(self)
        group?.untrack(self)
        // Pipes with bytes in them are closed, never pooled.
        let pipes = context.pipes
        for tag in Sides.tags {
            sides.update(tag) { s in
                if reset { Socket.setResetOnClose(s.socket) }
                if let p = s.pipe.take(), s.buffered == 0 { pipes.give(p) }
            }
        }
        // The sockets close with the connection, which the loop just let go of: no event
        // reaches it again, and nothing else holds it once it left its queue and group.
        context.loop.detach(id)
        mapping.pointer.pointee.active -= 1
        if context.isBulk { mapping.pointer.pointee.bulk -= 1 }
        mapping.pointer.pointee.closed &+= 1
    }
}
