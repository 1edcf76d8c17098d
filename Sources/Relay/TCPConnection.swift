// Theory of operation: one client socket (side 0), one backend socket (side 1), and two
// directions, "up" (client → backend) and "down" (backend → client). Each direction moves
// bytes socket → pipe → socket with splice(2); its pipe comes from the loop's pool when a
// read is about to happen and goes back as soon as it is empty, so an idle connection
// holds only its two sockets.
//
// Both sockets are registered once, edge-triggered, for read, write and read-hangup; the
// connection keeps `readable`/`writable` bits per side, set by events and cleared by
// EAGAIN. Backpressure needs no epoll_ctl: a direction whose pipe cannot drain stops
// reading, and the next write edge on its target resumes it.
//
// A splice into a pipe can fail with EAGAIN because the pipe ran out of slots even though
// its byte count says there is room; so EAGAIN on the read side clears `readable` only
// when the pipe is empty (then it must have been the socket). Otherwise the read is tried
// again after the pipe drains.
//
// Direction states: `eof` (read returned 0), then `shutdownSent` (the pipe drained and
// the target got shutdown(SHUT_WR)): half-close, the other direction keeps flowing. Both
// directions shut down: the connection closes. A read error (the peer reset) resets the
// other side (SO_LINGER 0, then close), a write error (the target is gone) resets the
// source side: a reset travels both ways. A refused or timed-out backend resets the client.
//
// If no pipe can be had (out of descriptors), the direction falls back to copying through
// the loop's scratch buffer with MSG_PEEK: peek, send, then consume exactly what was sent,
// so no byte is held in userspace between events.

import Glibc
import LinuxIO
import Logging
import SystemPackage

final class TCPConnection: EventHandler {
    private enum Phase { case connecting, relaying, closed }

    private struct Direction {
        var buffered = 0
        var pipeRead: Int32 = -1
        var pipeWrite: Int32 = -1
        var capacity = 0
        var eof = false
        var shutdownSent = false
    }

    private enum PumpResult {
        case progressed(Bool)
        case readFailed(Errno)
        case writeFailed(Errno)
    }

    private static let interest: Interest = [.read, .write, .readHangup, .edge]
    /// Reads up to this size copy instead of splicing (see `copySmall`).
    private static let smallCopy = 16 << 10
    private static let clientTag: UInt8 = 0
    private static let backendTag: UInt8 = 1
    static let connectTimerTag: UInt8 = 0
    static let halfCloseTimerTag: UInt8 = 1

    private let context: RelayContext
    private var id: HandlerID
    private var phase: Phase
    private var client: Descriptor?
    private var backend: Descriptor?
    private let clientFD: Int32
    private let backendFD: Int32
    private var upPipe: Pipe?
    private var downPipe: Pipe?
    private var up = Direction()
    private var down = Direction()
    private var clientReadable = false
    private var clientWritable = false
    private var backendReadable = false
    private var backendWritable = false
    /// The peer's FIN (or a hang-up) was reported: read until recv says 0, whatever a short read suggests.
    private var clientHangup = false
    private var backendHangup = false
    private var lastActivity: Instant
    private var halfCloseArmed = false
    /// Links of the `TimeoutQueue` the connection waits in, if any (connecting, or half-closed).
    unowned(unsafe) var queue: TimeoutQueue?
    var queueNext: TCPConnection?
    unowned(unsafe) var queuePrevious: TCPConnection?
    var queueDeadline = Instant(nanoseconds: 0)

    private init(client: consuming Descriptor, backend: consuming Descriptor, context: RelayContext, connected: Bool) {
        self.context = context
        clientFD = client.raw
        backendFD = backend.raw
        self.client = consume client
        self.backend = consume backend
        phase = connected ? .relaying : .connecting
        lastActivity = context.loop.now
        id = HandlerID.none
    }

    /// Connects `backend` (a fresh socket of the target's family) to `target` for an accepted
    /// client and relays once it answers; a backend that refuses at once resets the client.
    static func start(client: consuming Descriptor, backend: consuming Descriptor, target: SocketAddress, context: RelayContext) {
        // The client inherits TCP_NODELAY from its listener (Listener.tcp sets it there).
        Socket.setNoDelay(backend.raw)
        let connected: Bool
        do {
            connected = try Socket.connect(backend.raw, target) == .connected
        } catch {
            Socket.setResetOnClose(client.raw)
            context.counters.refused &+= 1
            context.logger.debug("connect \(target): \(error)")
            return
        }
        let connection = TCPConnection(client: client, backend: backend, context: context, connected: connected)
        connection.register(target: target)
    }

    private func register(target: SocketAddress) {
        let loop = context.loop
        id = loop.attach(self)
        context.counters.active += 1
        do {
            try loop.add(clientFD, Self.interest, for: id, tag: Self.clientTag)
            try loop.add(backendFD, Self.interest, for: id, tag: Self.backendTag)
        } catch {
            context.logger.warning("\(error)")
            close(reset: true)
            return
        }
        if phase == .connecting { context.connecting.join(self, since: loop.now) }
    }

    // MARK: events

    func ready(_ readiness: Readiness, tag: UInt8, loop: EventLoop) {
        if tag == Self.clientTag {
            if readiness.readable { clientReadable = true }
            if readiness.writable { clientWritable = true }
            if readiness.readHangup { clientHangup = true }
        } else {
            if readiness.readable { backendReadable = true }
            if readiness.writable { backendWritable = true }
            if readiness.readHangup { backendHangup = true }
        }
        if phase == .connecting {
            guard tag == Self.backendTag, readiness.writable || readiness.error else {
                if readiness.error, Socket.pendingError(clientFD) != nil { close(reset: true) }
                return
            }
            // Success is a plain write edge; a refusal also sets EPOLLERR, so only then ask SO_ERROR.
            if readiness.error || readiness.hangup, let error = Socket.pendingError(backendFD) {
                context.counters.refused &+= 1
                context.logger.debug("connect: \(SyscallError.text(error))")
                Socket.setResetOnClose(clientFD)
                close(reset: false)
                return
            }
            context.connecting.leave(self)
            phase = .relaying
        }
        guard phase == .relaying else { return }
        if readiness.error, let error = Socket.pendingError(tag == Self.clientTag ? clientFD : backendFD) {
            context.logger.trace("side \(tag): \(SyscallError.text(error))")
            context.counters.resets &+= 1
            close(reset: true)
            return
        }
        relay()
    }

    func timer(tag: UInt8, loop: EventLoop) {
        switch (tag, phase) {
        case (Self.connectTimerTag, .connecting):
            context.counters.connectTimeouts &+= 1
            context.logger.debug("connect: timed out after \(context.config.connectTimeout)")
            close(reset: true)
        case (Self.halfCloseTimerTag, .relaying):
            if loop.now < lastActivity + context.config.halfCloseTimeout {
                context.halfClosed.join(self, since: lastActivity)
            } else {
                context.counters.halfCloseTimeouts &+= 1
                close(reset: true)
            }
        default:
            break
        }
    }

    // MARK: moving bytes

    private func relay() {
        let upResult = pump(
            &up, pipe: &upPipe, from: clientFD, to: backendFD, readable: &clientReadable, writable: &backendWritable, hangup: clientHangup)
        if !handle(upResult, source: clientFD, target: backendFD) { return }
        let downResult = pump(
            &down, pipe: &downPipe, from: backendFD, to: clientFD, readable: &backendReadable, writable: &clientWritable, hangup: backendHangup)
        if !handle(downResult, source: backendFD, target: clientFD) { return }

        if up.shutdownSent && down.shutdownSent {
            close(reset: false)
        } else if (up.shutdownSent || down.shutdownSent) && !halfCloseArmed {
            halfCloseArmed = true
            context.halfClosed.join(self, since: lastActivity)
        }
    }

    /// False when the connection was closed.
    private func handle(_ result: PumpResult, source: Int32, target: Int32) -> Bool {
        switch result {
        case .progressed(let moved):
            if moved { lastActivity = context.loop.now }
            return true
        case .readFailed, .writeFailed:
            // Whichever side failed, the other learns by a reset.
            context.counters.resets &+= 1
            close(reset: true)
            return false
        }
    }

    /// Moves what it can in one direction until both ends would block or nothing is left.
    @inline(__always)
    private func pump(
        _ d: inout Direction, pipe: inout Pipe?, from: Int32, to: Int32, readable: inout Bool, writable: inout Bool,
        hangup: Bool
    ) -> PumpResult {
        var movedAny = false
        // The first read of a wake-up may copy (see `copySmall`); bulk goes on with splice.
        var copyFirst = true
        while true {
            var progressed = false
            if !d.eof && readable && (d.pipeWrite < 0 || d.buffered < d.capacity) {
                if d.pipeWrite < 0 {
                    do {
                        let p = try context.pipes.take()
                        d.pipeRead = p.read.raw
                        d.pipeWrite = p.write.raw
                        d.capacity = p.capacity
                        pipe = consume p
                    } catch {
                        // Out of descriptors: copy instead, holding nothing between events.
                        return copy(&d, from: from, to: to, readable: &readable, writable: &writable)
                    }
                }
                if copyFirst && d.buffered == 0 && writable {
                    switch copySmall(&d, from: from, to: to, readable: &readable, writable: &writable, hangup: hangup) {
                    case .progressed(let moved):
                        progressed = moved
                        copyFirst = !moved || readable == false
                    case let failure:
                        return failure
                    }
                } else {
                    context.counters.spliceCalls &+= 1
                    do {
                        switch try Splice.move(from: from, to: d.pipeWrite, length: d.capacity - d.buffered) {
                        case .done(0):
                            d.eof = true
                        case .done(let n):
                            d.buffered += n
                            progressed = true
                        case .wouldBlock:
                            if d.buffered == 0 { readable = false }
                        }
                    } catch {
                        return .readFailed(error.errno)
                    }
                }
            }
            if d.buffered > 0 && writable {
                context.counters.spliceCalls &+= 1
                do {
                    switch try Splice.move(from: d.pipeRead, to: to, length: d.buffered) {
                    case .done(let n):
                        d.buffered -= n
                        delivered(n, to: to)
                        progressed = true
                    case .wouldBlock:
                        writable = false
                    }
                } catch {
                    return .writeFailed(error.errno)
                }
            }
            if !progressed { break }
            movedAny = true
        }
        if d.buffered == 0 && d.pipeWrite >= 0 {
            if let p = pipe.take() { context.pipes.give(p) }
            d.pipeRead = -1
            d.pipeWrite = -1
        }
        shutDownIfDrained(&d, to: to)
        return .progressed(movedAny)
    }

    /// Counts bytes the target took.
    @inline(__always)
    private func delivered(_ n: Int, to: Int32) {
        if to == backendFD { context.counters.bytesToBackend &+= UInt64(n) } else { context.counters.bytesToClient &+= UInt64(n) }
    }

    /// Half-close: the source's EOF reaches the target once nothing of it waits in the pipe.
    /// When the other direction is done already, the connection closes next and close(2) sends
    /// the FIN: both sockets were read to their end, so it is a FIN, not a reset.
    private func shutDownIfDrained(_ d: inout Direction, to: Int32) {
        guard d.eof && d.buffered == 0 && !d.shutdownSent else { return }
        d.shutdownSent = true
        let otherDone = to == backendFD ? down.shutdownSent : up.shutdownSent
        if !otherDone { Socket.shutdownWrite(to) }
    }

    /// Small messages: recv into the loop's buffer and send at once. Two system calls where splice
    /// needs three (in, out, and the EAGAIN that proves the socket empty): a TCP recv that returns
    /// less than asked has emptied the receive queue, so the next data brings a new edge. If the
    /// peer's FIN was already reported (`hangup`), that short read reached it: EOF, without the
    /// recv that would return 0 (a connection-per-request client saves one a side). What the
    /// target does not take goes into the (empty) pipe, which keeps the order. A full read means
    /// bulk: the caller goes on with splice.
    private func copySmall(
        _ d: inout Direction, from: Int32, to: Int32, readable: inout Bool, writable: inout Bool, hangup: Bool
    ) -> PumpResult {
        let want = min(Self.smallCopy, d.capacity)
        let buffer = context.scratch.baseAddress!
        context.counters.copyCalls &+= 1
        let n = recv(from, buffer, want, Int32(MSG_DONTWAIT))
        if n == 0 {
            d.eof = true
            return .progressed(false)
        }
        if n < 0 {
            if errno == EAGAIN || errno == EWOULDBLOCK {
                readable = false
                return .progressed(false)
            }
            return errno == EINTR ? .progressed(false) : .readFailed(Errno(rawValue: errno))
        }
        var sent = send(to, buffer, n, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
        if sent < 0 {
            guard errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR else { return .writeFailed(Errno(rawValue: errno)) }
            sent = 0
            writable = false
        }
        if sent < n {
            // Into the empty pipe, which holds at least `want` bytes: nothing is lost or reordered.
            let rest = n - sent
            let stashed = write(d.pipeWrite, buffer + sent, rest)
            precondition(stashed == rest, "an empty pipe took \(stashed) of \(rest) bytes")
            d.buffered = rest
            writable = false
            context.counters.copyStashes &+= 1
        }
        delivered(sent, to: to)
        // Short: the receive queue is empty. If the peer's FIN is in already, nothing follows it.
        if n < want {
            if hangup { d.eof = true } else { readable = false }
        }
        return .progressed(true)
    }

    /// The fallback when no pipe can be had: peek, send, consume what was sent.
    private func copy(_ d: inout Direction, from: Int32, to: Int32, readable: inout Bool, writable: inout Bool) -> PumpResult {
        var movedAny = false
        let buffer = context.scratch
        while readable && writable && !d.eof {
            let peeked = recv(from, buffer.baseAddress, buffer.count, Int32(MSG_PEEK | MSG_DONTWAIT))
            if peeked == 0 { d.eof = true; break }
            if peeked < 0 {
                if errno == EAGAIN || errno == EINTR { readable = errno != EAGAIN; continue }
                return .readFailed(Errno(rawValue: errno))
            }
            let sent = send(to, buffer.baseAddress, peeked, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            if sent < 0 {
                if errno == EAGAIN || errno == EINTR { writable = errno != EAGAIN; continue }
                return .writeFailed(Errno(rawValue: errno))
            }
            _ = recv(from, buffer.baseAddress, sent, Int32(MSG_DONTWAIT))
            delivered(sent, to: to)
            movedAny = true
        }
        shutDownIfDrained(&d, to: to)
        return .progressed(movedAny)
    }

    // MARK: closing

    private func close(reset: Bool) {
        guard phase != .closed else { return }
        phase = .closed
        queue?.leave(self)
        if reset {
            Socket.setResetOnClose(clientFD)
            Socket.setResetOnClose(backendFD)
        }
        context.loop.detach(id)
        client = nil
        backend = nil
        // Pipes with bytes in them are closed, never pooled.
        if up.buffered == 0, let p = upPipe.take() { context.pipes.give(p) }
        if down.buffered == 0, let p = downPipe.take() { context.pipes.give(p) }
        upPipe = nil
        downPipe = nil
        context.counters.active -= 1
        context.counters.closed &+= 1
    }
}
