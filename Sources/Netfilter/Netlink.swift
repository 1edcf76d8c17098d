// Netlink plumbing shared by the nftables and ctnetlink code: one owned socket, a reader that
// walks the messages of a receive buffer, and a walker over netlink attributes.
import CNetfilter
import LinuxIO

#if canImport(Glibc)
import Glibc
#endif

/// A NETLINK_NETFILTER socket, closed when it goes away (libmnl builds the messages; the socket
/// and its calls are LinuxIO's).
///
/// For an nftables table with the owner flag this socket *is* the table's life: the kernel
/// removes the table when the socket closes, so keep it for as long as the table should live.
struct NetlinkSocket: ~Copyable {
    private let socket: Descriptor
    let portID: UInt32
    private(set) var sendBufferSize: Int
    private var sequence: UInt32

    /// `what` names the user in errors: `nftables` or `conntrack`.
    init(_ what: String) throws(NetfilterError) {
        do {
            let socket = try Socket.netlink(NETLINK_NETFILTER)
            portID = try Socket.netlinkPortID(socket)
            self.socket = socket
        } catch {
            throw NetfilterError("\(what): open netlink socket (\(error.call))", errno: error.errno.rawValue)
        }
        self.sendBufferSize = 0
        // Sequence numbers only need to be distinct within this socket; start somewhere
        // unpredictable so a reply to an earlier socket with the same port id is not mistaken.
        self.sequence = UInt32(truncatingIfNeeded: time(nil)) &* 2_654_435_761
        // Errors echo only the failing message's header, not its (possibly large) payload, and
        // carry extended-ack attributes (an offset into the message, sometimes a text).
        try? Socket.setOption(socket, SOL_NETLINK, NETLINK_CAP_ACK, 1)
        try? Socket.setOption(socket, SOL_NETLINK, NETLINK_EXT_ACK, 1)
        sendBufferSize = Self.bufferSize(socket, SO_SNDBUF)
    }

    /// The sequence number the next request should use.
    var nextSequence: UInt32 { sequence }

    /// Marks every sequence number before `next` as used.
    mutating func advanceSequence(past next: UInt32) { sequence = next }

    /// Makes the send buffer hold at least `bytes`: SO_SNDBUFFORCE when we may (real root), else
    /// SO_SNDBUF, which the kernel caps at net.core.wmem_max. A netlink message (a whole batch)
    /// larger than the send buffer fails with EMSGSIZE.
    mutating func ensureSendBuffer(_ bytes: Int) {
        guard bytes > sendBufferSize else { return }
        Self.raise(socket, force: SO_SNDBUFFORCE, plain: SO_SNDBUF, to: bytes)
        sendBufferSize = Self.bufferSize(socket, SO_SNDBUF)
    }

    func ensureReceiveBuffer(_ bytes: Int) {
        guard bytes > Self.bufferSize(socket, SO_RCVBUF) else { return }
        Self.raise(socket, force: SO_RCVBUFFORCE, plain: SO_RCVBUF, to: bytes)
    }

    private static func raise(_ fd: borrowing Descriptor, force: Int32, plain: Int32, to bytes: Int) {
        // The kernel doubles the value it is given (bookkeeping overhead); ask for half.
        let half = Int32(clamping: (bytes + 1) / 2)
        if (try? Socket.setOption(fd, SOL_SOCKET, force, half)) == nil {
            try? Socket.setOption(fd, SOL_SOCKET, plain, half)
        }
    }

    private static func bufferSize(_ fd: borrowing Descriptor, _ option: Int32) -> Int {
        (try? Socket.getOption(fd, SOL_SOCKET, option)).map(Int.init) ?? 0
    }

    /// Sends one buffer (one batch, or one request) to the kernel in a single sendmsg, through
    /// LinuxIO's one retry loop (EINTR).
    func send(_ bytes: UnsafeRawBufferPointer, _ what: @autoclosure () -> String) throws(NetfilterError) {
        do {
            // Unconnected: a netlink send without an address goes to the kernel (port id 0).
            guard let base = bytes.baseAddress else { return }
            _ = try Socket.sendBlocking(socket, from: base, count: bytes.count)
        } catch {
            throw NetfilterError(what(), errno: error.errno.rawValue)
        }
    }

    /// Receives one datagram (possibly many netlink messages). Waits at most `timeoutMs`;
    /// returns 0 on timeout.
    func receive(
        into buffer: UnsafeMutableRawBufferPointer,
        timeoutMs: Int32,
        _ what: @autoclosure () -> String
    )
        throws(NetfilterError) -> Int
    {
        do {
            while true {
                guard let base = buffer.baseAddress else { return 0 }
                if try !Socket.waitReadable(socket, timeoutMs: timeoutMs) { return 0 }
                switch try Socket.receive(socket, into: base, count: buffer.count) {
                case .done(let got): return got
                case .wouldBlock: continue
                }
            }
        } catch {
            if error.errno == .noBufferSpace {
                throw NetfilterError(what(), errno: ENOBUFS, extra: "replies overflowed the receive buffer")
            }
            throw NetfilterError(what(), errno: error.errno.rawValue)
        }
    }
}

/// One netlink message inside a receive buffer.
struct NetlinkMessage {
    let header: UnsafePointer<nlmsghdr>

    var type: UInt16 { header.pointee.nlmsg_type }
    var sequence: UInt32 { header.pointee.nlmsg_seq }
    var flags: UInt16 { header.pointee.nlmsg_flags }

    /// The bytes after the netlink header.
    var payload: UnsafeRawBufferPointer {
        let hdr = Int(cnetfilter_nlmsg_hdrlen())
        let total = Int(header.pointee.nlmsg_len)
        return UnsafeRawBufferPointer(start: UnsafeRawPointer(header) + hdr, count: max(0, total - hdr))
    }

    /// The attributes after a `struct nfgenmsg` (nftables and ctnetlink messages).
    var nfAttributes: NetlinkAttributes {
        let p = payload
        let skip = MemoryLayout<nfgenmsg>.size
        guard p.count >= skip else { return NetlinkAttributes(UnsafeRawBufferPointer(start: nil, count: 0)) }
        return NetlinkAttributes(UnsafeRawBufferPointer(rebasing: p[skip...]))
    }

    /// For NLMSG_ERROR: the errno (0 for an ACK), the sequence it answers, and the extended-ack
    /// text and offset when the kernel sent them.
    var errorReply: (errno: Int32, sequence: UInt32, message: String?, offset: UInt32?)? {
        guard type == UInt16(NLMSG_ERROR) else { return nil }
        let p = payload
        guard p.count >= MemoryLayout<nlmsgerr>.size else { return nil }
        let err = p.loadUnaligned(as: nlmsgerr.self)
        var text: String?
        var offset: UInt32?
        if flags & UInt16(NLM_F_ACK_TLVS) != 0 {
            // With NETLINK_CAP_ACK the echoed request is only its header; without, the whole message.
            let echoed =
                flags & UInt16(NLM_F_CAPPED) != 0
                ? MemoryLayout<nlmsgerr>.size
                : MemoryLayout<Int32>.size + Int(cnetfilter_nlmsg_align(err.msg.nlmsg_len))
            if echoed <= p.count {
                for attr in NetlinkAttributes(UnsafeRawBufferPointer(rebasing: p[echoed...])) {
                    switch Int32(attr.type) {
                    case Int32(NLMSGERR_ATTR_MSG.rawValue): text = attr.string
                    case Int32(NLMSGERR_ATTR_OFFS.rawValue): offset = attr.u32
                    default: break
                    }
                }
            }
        }
        return (-err.error, err.msg.nlmsg_seq, text, offset)
    }
}

/// Walks the netlink messages of one received datagram.
struct NetlinkMessages: Sequence, IteratorProtocol {
    private var current: UnsafePointer<nlmsghdr>?
    private var remaining: Int32

    init(_ bytes: UnsafeRawBufferPointer) {
        current = bytes.baseAddress?.assumingMemoryBound(to: nlmsghdr.self)
        remaining = Int32(bytes.count)
    }

    mutating func next() -> NetlinkMessage? {
        guard let message = current, mnl_nlmsg_ok(message, remaining) else { return nil }
        current = mnl_nlmsg_next(message, &remaining).map { UnsafePointer($0) }
        return NetlinkMessage(header: message)
    }
}

/// One netlink attribute: type (without the nested/byte-order flags) and payload.
struct NetlinkAttribute {
    let type: UInt16
    let payload: UnsafeRawBufferPointer

    var nested: NetlinkAttributes { NetlinkAttributes(payload) }
    var u8: UInt8? { payload.count >= 1 ? payload[0] : nil }
    /// A big-endian (network order) u16, as ports are.
    var be16: UInt16? { payload.count >= 2 ? UInt16(bigEndian: payload.loadUnaligned(as: UInt16.self)) : nil }
    var be32: UInt32? { payload.count >= 4 ? UInt32(bigEndian: payload.loadUnaligned(as: UInt32.self)) : nil }
    /// A host-order u32, as netlink's own (not netfilter's) attributes are.
    var u32: UInt32? { payload.count >= 4 ? payload.loadUnaligned(as: UInt32.self) : nil }
    var bytes: [UInt8] { Array(payload) }
    var string: String {
        let chars = payload.prefix { $0 != 0 }
        return String(decoding: chars, as: UTF8.self)
    }
}

/// Walks a run of netlink attributes (each 4-byte aligned: u16 length, u16 type, payload).
struct NetlinkAttributes: Sequence, IteratorProtocol {
    private var rest: UnsafeRawBufferPointer

    init(_ bytes: UnsafeRawBufferPointer) { rest = bytes }

    mutating func next() -> NetlinkAttribute? {
        guard rest.count >= 4 else { return nil }
        let length = Int(rest.loadUnaligned(fromByteOffset: 0, as: UInt16.self))
        // NLA_TYPE_MASK (a macro Swift cannot import): drop NLA_F_NESTED and NLA_F_NET_BYTEORDER.
        let type = rest.loadUnaligned(fromByteOffset: 2, as: UInt16.self) & 0x3fff
        guard length >= 4, length <= rest.count else { return nil }
        let attribute = NetlinkAttribute(type: type, payload: UnsafeRawBufferPointer(rebasing: rest[4..<length]))
        let advance = Swift.min(rest.count, Int(cnetfilter_nlmsg_align(UInt32(length))))
        rest = UnsafeRawBufferPointer(rebasing: rest[advance...])
        return attribute
    }

    func first(_ type: Int32) -> NetlinkAttribute? {
        for attr in self where Int32(attr.type) == type { return attr }
        return nil
    }
}
