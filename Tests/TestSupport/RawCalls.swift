// LinuxIO's calls on a raw descriptor number, for tests only: a test makes sockets with plain
// libc calls (a peer that misbehaves, an inherited descriptor, a socketpair) and inspects them
// with berth's own calls. Each lends the number to the owner-taking call and closes nothing.
// Product code takes owners (`Descriptor`); nothing under Sources/ can see these (make lint
// checks that nothing there lends a raw number outside LinuxIO).

import Glibc
import LinuxIO
import SystemPackage

extension Socket {
    package static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) throws(SyscallError) {
        try Descriptor.lending(fd) { (d) throws(SyscallError) in try setOption(d, level, name, value) }
    }

    package static func getOption(_ fd: Int32, _ level: Int32, _ name: Int32) throws(SyscallError) -> Int32 {
        try Descriptor.lending(fd) { (d) throws(SyscallError) in try getOption(d, level, name) }
    }

    package static func bind(_ fd: Int32, _ address: SocketAddress) throws(SyscallError) {
        try Descriptor.lending(fd) { (d) throws(SyscallError) in try bind(d, address) }
    }

    package static func listen(_ fd: Int32, backlog: Int32) throws(SyscallError) {
        try Descriptor.lending(fd) { (d) throws(SyscallError) in try listen(d, backlog: backlog) }
    }

    package static func localAddress(_ fd: Int32) throws(SyscallError) -> SocketAddress {
        try Descriptor.lending(fd) { (d) throws(SyscallError) in try localAddress(d) }
    }

    package static func peerAddress(_ fd: Int32) throws(SyscallError) -> SocketAddress {
        try Descriptor.lending(fd) { (d) throws(SyscallError) in try peerAddress(d) }
    }

    /// The accepted client's number, which the caller must own at once.
    package static func accept(_ fd: Int32) throws(SyscallError) -> Int32? {
        try Descriptor.lending(fd) { (d) throws(SyscallError) in try accept(d)?.release() }
    }

    package static func connect(_ fd: Int32, _ address: SocketAddress) throws(SyscallError) -> ConnectResult {
        try Descriptor.lending(fd) { (d) throws(SyscallError) in try connect(d, address) }
    }

    package static func pendingError(_ fd: Int32) -> Errno? {
        Descriptor.lending(fd) { pendingError($0) }
    }

    package static func receive(
        _ fd: Int32,
        into buffer: UnsafeMutableRawPointer,
        count: Int
    ) throws(SyscallError) -> IOResult<Int> {
        try Descriptor.lending(fd) { (d) throws(SyscallError) in try receive(d, into: buffer, count: count) }
    }

    package static func send(
        _ fd: Int32,
        from buffer: UnsafeRawPointer,
        count: Int
    ) throws(SyscallError) -> IOResult<Int> {
        try Descriptor.lending(fd) { (d) throws(SyscallError) in try send(d, from: buffer, count: count) }
    }

    package static func setTimeouts(_ fd: Int32, seconds: Int) throws(SyscallError) {
        try Descriptor.lending(fd) { (d) throws(SyscallError) in try setTimeouts(d, seconds: seconds) }
    }

    package static func sendBlocking(_ fd: Int32, from buffer: UnsafeRawPointer, count: Int) throws(SyscallError) -> Int
    {
        try Descriptor.lending(fd) { (d) throws(SyscallError) in try sendBlocking(d, from: buffer, count: count) }
    }

    package static func receiveBlocking(
        _ fd: Int32,
        into buffer: UnsafeMutableRawPointer,
        count: Int
    ) throws(SyscallError) -> Int {
        try Descriptor.lending(fd) { (d) throws(SyscallError) in try receiveBlocking(d, into: buffer, count: count) }
    }

    package static func setReusePort(_ fd: Int32) throws(SyscallError) {
        try Descriptor.lending(fd) { (d) throws(SyscallError) in try setReusePort(d) }
    }

    package static func shutdownWrite(_ fd: Int32) { Descriptor.lending(fd) { shutdownWrite($0) } }

    package static func setResetOnClose(_ fd: Int32) { Descriptor.lending(fd) { setResetOnClose($0) } }

    package static func setNoDelay(_ fd: Int32) { Descriptor.lending(fd) { setNoDelay($0) } }

    package static func makeNonBlocking(_ fd: Int32) throws(SyscallError) {
        try Descriptor.lending(fd) { (d) throws(SyscallError) in try makeNonBlocking(d) }
    }

    package static func type(_ fd: Int32) throws(SyscallError) -> Int32 {
        try Descriptor.lending(fd) { (d) throws(SyscallError) in try type(d) }
    }

    package static func isV6Only(_ fd: Int32) throws(SyscallError) -> Bool {
        try Descriptor.lending(fd) { (d) throws(SyscallError) in try isV6Only(d) }
    }

    package static func isListening(_ fd: Int32) throws(SyscallError) -> Bool {
        try Descriptor.lending(fd) { (d) throws(SyscallError) in try isListening(d) }
    }

    package static func setReceiveBuffer(_ fd: Int32, bytes: Int) {
        Descriptor.lending(fd) { setReceiveBuffer($0, bytes: bytes) }
    }

    package static func receiveBufferSize(_ fd: Int32) -> Int { Descriptor.lending(fd) { receiveBufferSize($0) } }

    package static func setPacketInfo(_ fd: Int32, v6: Bool, _ enabled: Bool) throws(SyscallError) {
        try Descriptor.lending(fd) { (d) throws(SyscallError) in try setPacketInfo(d, v6: v6, enabled) }
    }
}

extension DatagramBatch {
    @inline(__always)
    package func receive(from fd: Int32) throws(SyscallError) -> IOResult<Int> {
        try Descriptor.lending(fd) { (d) throws(SyscallError) in try receive(from: d) }
    }

    @inline(__always)
    package func send(
        _ fd: Int32,
        queued range: Range<Int>,
        to peer: UnsafeRawPointer? = nil,
        length: socklen_t = 0,
        from source: PacketInfo? = nil
    ) throws(SyscallError) -> IOResult<Int> {
        try Descriptor.lending(fd) { (d) throws(SyscallError) in
            try send(d, queued: range, to: peer, length: length, from: source)
        }
    }
}

extension UnixSocket {
    package static func receive(
        _ fd: Int32,
        into buffer: UnsafeMutableRawPointer,
        count: Int,
        passed: (consuming Descriptor) -> Void
    ) throws(SyscallError) -> IOResult<Int> {
        try Descriptor.lending(fd) { (d) throws(SyscallError) in
            try receive(d, into: buffer, count: count, passed: passed)
        }
    }

    package static func send(
        _ fd: Int32,
        from buffer: UnsafeRawPointer,
        count: Int,
        passing descriptors: [Int32]
    ) throws(SyscallError) -> Int {
        try Descriptor.lending(fd) { (d) throws(SyscallError) in
            try send(d, from: buffer, count: count, passing: descriptors)
        }
    }

    package static func peerCredentials(_ fd: Int32) throws(SyscallError) -> Credentials {
        try Descriptor.lending(fd) { (d) throws(SyscallError) in try peerCredentials(d) }
    }
}

extension Selector {
    package func add(_ fd: Int32, _ interest: Interest, token: UInt64) throws(SyscallError) {
        try Descriptor.lending(fd) { (d) throws(SyscallError) in try add(d, interest, token: token) }
    }

    package func remove(_ fd: Int32) { Descriptor.lending(fd) { remove($0) } }
}

extension EventLoop {
    package func add(_ fd: Int32, _ interest: Interest, for id: HandlerID, tag: UInt8) throws(SyscallError) {
        try Descriptor.lending(fd) { (d) throws(SyscallError) in try add(d, interest, for: id, tag: tag) }
    }

    package func remove(_ fd: Int32) { Descriptor.lending(fd) { remove($0) } }
}

extension Splice {
    @inline(__always)
    package static func move(from: Int32, to: Int32, length: Int) throws(SyscallError) -> IOResult<Int> {
        try Descriptor.lending(from) { (source) throws(SyscallError) in
            try Descriptor.lending(to) { (target) throws(SyscallError) in
                try move(from: source, to: target, length: length)
            }
        }
    }
}
