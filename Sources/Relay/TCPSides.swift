// One side of a TCP connection (a socket and the stream read from it) and the pair of them,
// indexed by their epoll tag, so what is done for each side is written once.

import LinuxIO

extension TCPConnection {
    /// A socket and the stream read from it.
    struct Side: ~Copyable {
        /// 0 for the client, 1 for the backend: its epoll tag.
        let tag: UInt8
        /// Closes with the connection (when the loop lets go of it, right after `close`).
        let socket: Descriptor
        var readable = false
        var writable = false
        /// The peer's FIN (or a hang-up) was reported: a short read has reached the end.
        var hangup = false
        /// Bytes read from this side that wait for the other; the pipe only while some are in flight.
        var pipe: Pipe?
        var buffered = 0
        var readDone = false
        var failed = false
        var finForwarded = false
        /// EPOLLERR was reported: a short read is not the end, the error is still to come.
        var errored = false

        init(_ socket: consuming Descriptor, tag: UInt8) {
            self.tag = tag
            self.socket = socket
        }

        var hasPipe: Bool {
            switch pipe {
            case .some: return true
            case .none: return false
            }
        }

        /// The pipe's capacity as the kernel granted it; 0 without a pipe.
        var capacity: Int {
            switch pipe {
            case .some(let p): return p.capacity
            case .none: return 0
            }
        }

        /// splice(2) from the socket into its pipe (there is one: the caller took it).
        @inline(__always)
        func fillPipe(length: Int) throws(SyscallError) -> IOResult<Int> {
            switch pipe {
            case .some(let p): return try Splice.move(from: socket, to: p.write, length: length)
            case .none: return .wouldBlock
            }
        }

        /// splice(2) from its pipe into `target` (there is one: it holds the bytes).
        @inline(__always)
        func drainPipe(into target: borrowing Descriptor, length: Int) throws(SyscallError) -> IOResult<Int> {
            switch pipe {
            case .some(let p): return try Splice.move(from: p.read, to: target, length: length)
            case .none: return .wouldBlock
            }
        }

        /// Puts bytes the target did not take into the (empty) pipe: how many it took.
        func stash(_ buffer: UnsafeRawPointer, count: Int) -> Int {
            switch pipe {
            case .some(let p):
                if case .done(let took)? = try? p.write(from: buffer, count: count) { return took }
                return 0
            case .none: return 0
            }
        }

        mutating func note(_ readiness: Readiness) {
            if readiness.readable { readable = true }
            if readiness.writable { writable = true }
            if readiness.readHangup { hangup = true }
            // Let the next read and write report the error, each after what is queued before it.
            if readiness.error {
                errored = true
                readable = true
                writable = true
            }
        }

        /// Everything this side sent has reached the other side, or never can.
        func delivered(toFailedPeer peerFailed: Bool) -> Bool { (readDone && buffered == 0) || peerFailed }
    }

    /// Side 0, the client, and side 1, the backend, indexed by their epoll tag. Two stored
    /// fields, not an array, so one side and the other can be borrowed at once (`pair`).
    struct Sides: ~Copyable {
        static let tags: ClosedRange<UInt8> = 0...1
        var client: Side
        var backend: Side

        init(client: consuming Descriptor, backend: consuming Descriptor) {
            self.client = Side(client, tag: 0)
            self.backend = Side(backend, tag: 1)
        }

        /// `body` with side `tag`. Functions that take a closure, not a subscript: a subscript's
        /// `_read` and `_modify` are coroutines, and the read one kept its frame on the heap
        /// (two mallocs a connection, callgrind; this way there are none).
        @inline(__always)
        func with<R, E: Error>(_ tag: UInt8, _ body: (borrowing Side) throws(E) -> R) throws(E) -> R {
            if tag == 0 { try body(client) } else { try body(backend) }
        }

        /// `body` with side `tag`, mutable.
        @inline(__always)
        mutating func update<R>(_ tag: UInt8, _ body: (inout Side) -> R) -> R {
            if tag == 0 { body(&client) } else { body(&backend) }
        }

        /// Side `tag` and the other one, each mutable.
        @inline(__always)
        mutating func pair<R>(_ tag: UInt8, _ body: (inout Side, inout Side) -> R) -> R {
            if tag == 0 { body(&client, &backend) } else { body(&backend, &client) }
        }

        var anyFailed: Bool { client.failed || backend.failed }
    }
}
