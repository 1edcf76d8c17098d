// epoll, wrapped once. The loop decides level- or edge-triggered per descriptor
// (see EventLoop.swift for why connections use edge and listeners use level).

import CBerthLinux
import Glibc

/// What to be woken for.
public struct Interest: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let read = Interest(rawValue: EPOLLIN.rawValue)
    public static let write = Interest(rawValue: EPOLLOUT.rawValue)
    /// The peer shut down its write side (FIN): read returns 0 once drained.
    package static let readHangup = Interest(rawValue: EPOLLRDHUP.rawValue)
    /// Edge-triggered: woken once per change, not while the condition holds.
    package static let edge = Interest(rawValue: EPOLLET.rawValue)
    /// With one descriptor in several loops, wake only one of them (no thundering herd).
    package static let exclusive = Interest(rawValue: EPOLLEXCLUSIVE.rawValue)
}

/// What woke us, as returned by epoll_wait.
public struct Readiness: Sendable {
    @usableFromInline package let rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }

    @inlinable public var readable: Bool {
        rawValue & (EPOLLIN.rawValue | EPOLLRDHUP.rawValue | EPOLLHUP.rawValue) != 0
    }
    @inlinable package var writable: Bool { rawValue & (EPOLLOUT.rawValue | EPOLLHUP.rawValue) != 0 }
    /// The peer shut down its write side (or the connection hung up).
    @inlinable package var readHangup: Bool { rawValue & (EPOLLRDHUP.rawValue | EPOLLHUP.rawValue) != 0 }
    @inlinable public var error: Bool { rawValue & EPOLLERR.rawValue != 0 }
    @inlinable public var hangup: Bool { rawValue & EPOLLHUP.rawValue != 0 }
}

/// An epoll instance and its event buffer.
package struct Selector: ~Copyable {
    let epoll: Descriptor
    private var events: UnsafeMutableBufferPointer<epoll_event>

    package init(capacity: Int = 256) throws(SyscallError) {
        epoll = Descriptor(taking: try syscall("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) })
        events = .allocate(capacity: capacity)
    }

    deinit { events.deallocate() }

    package func add(_ fd: borrowing Descriptor, _ interest: Interest, token: UInt64) throws(SyscallError) {
        try control(EPOLL_CTL_ADD, fd, interest, token)
    }

    package func remove(_ fd: borrowing Descriptor) {
        let fd = fd.raw
        // ENOENT/EBADF after the descriptor was closed: it left the set by itself.
        _ = epoll_ctl(epoll.raw, EPOLL_CTL_DEL, fd, nil)
    }

    private func control(
        _ op: Int32,
        _ fd: borrowing Descriptor,
        _ interest: Interest,
        _ token: UInt64
    ) throws(SyscallError) {
        var event = epoll_event()
        event.events = interest.rawValue
        event.data.u64 = token
        _ = try syscall("epoll_ctl") { epoll_ctl(epoll.raw, op, fd.raw, &event) }
    }

    /// Waits up to `timeoutMilliseconds` (-1: forever); the events are then `event(i)` for i < count.
    package func wait(timeoutMilliseconds: Int32) throws(SyscallError) -> Int {
        let rc = epoll_wait(epoll.raw, events.baseAddress, Int32(events.count), timeoutMilliseconds)
        if rc < 0 {
            if errno == EINTR { return 0 }
            throw SyscallError("epoll_wait", .init(rawValue: errno))
        }
        return Int(rc)
    }

    @inline(__always)
    package func event(_ i: Int) -> (token: UInt64, readiness: Readiness) {
        (events[i].data.u64, Readiness(rawValue: events[i].events))
    }

    /// Doubles the buffer after a wait came back full.
    package mutating func growIfFull(_ count: Int) {
        guard count == events.count else { return }
        let bigger = events.count * 2
        events.deallocate()
        events = .allocate(capacity: bigger)
    }
}
