// Datagrams in batches: recvmmsg and sendmmsg over buffers allocated once, and the
// IP_PKTINFO / IPV6_PKTINFO control messages that tell which local address a datagram was
// sent to, and choose the source address of a reply.
//
// A batch has `capacity` receive slots, each with its own data buffer, source-address
// storage and control space, all set up once. Sending goes through a queue of message
// headers whose iovecs point into those same buffers: a datagram is received once and
// sent from where it lies, never copied, and nothing is allocated per datagram.
//
// Segmented sends (UDP GSO, UDP_SEGMENT): consecutive queued datagrams of one size (the last may
// be shorter) go to a connected socket as one sendmsg whose iovecs are theirs in order and whose
// control message gives the size; the kernel passes them down the stack once and cuts them into
// the same datagrams at the device (or, on loopback, at the receiving socket). Their iovecs lie
// two per datagram (prefix, payload), so the run's iovecs are contiguous: an unused one is empty.

import CBerthLinux
import Glibc

/// The local address a datagram was sent to, as IP_PKTINFO / IPV6_PKTINFO report it. A reply
/// sent with it leaves from that address, which is what a client of a wildcard socket expects.
package struct PacketInfo: Sendable, Hashable {
    /// The address as raw network-order memory; IPv4 in the first 4 bytes of `high`.
    package var high: UInt64
    package var low: UInt64
    package var isV6: Bool
    /// The interface index, kept only for IPv6 link-local addresses (a reply from one must
    /// name its link); 0 otherwise, so that routing picks the way out as for any reply.
    package var interface: UInt32

    package init(high: UInt64, low: UInt64, isV6: Bool, interface: UInt32) {
        self.high = high
        self.low = low
        self.isV6 = isV6
        self.interface = interface
    }

    /// The address with port 0, for logs and tests.
    package var address: SocketAddress {
        withUnsafeBytes(of: (high, low)) { raw in SocketAddress(ip: Array(raw.prefix(isV6 ? 16 : 4)), port: 0) }
    }
}

extension Socket {
    /// Asks for a receive buffer of `bytes`: SO_RCVBUFFORCE first (root or CAP_NET_ADMIN may go past
    /// net.core.rmem_max), else SO_RCVBUF, which the kernel silently caps at rmem_max. Best effort:
    /// a smaller buffer only means drops under bursts, never an error.
    package static func setReceiveBuffer(_ fd: borrowing Descriptor, bytes: Int) {
        let value = Int32(clamping: bytes)
        if (try? setOption(fd, SOL_SOCKET, CBerthLinux_SO_RCVBUFFORCE, value)) == nil {
            _ = try? setOption(fd, SOL_SOCKET, SO_RCVBUF, value)
        }
    }

    /// SO_RCVBUF as the kernel reports it: twice what was granted (it counts its bookkeeping too).
    package static func receiveBufferSize(_ fd: borrowing Descriptor) -> Int {
        Int((try? getOption(fd, SOL_SOCKET, SO_RCVBUF)) ?? 0)
    }

    /// IP_PKTINFO (IPv4) or IPV6_RECVPKTINFO (IPv6): each datagram received then says which local
    /// address it was sent to.
    package static func setPacketInfo(_ fd: borrowing Descriptor, v6: Bool, _ enabled: Bool) throws(SyscallError) {
        if v6 {
            try setOption(fd, Int32(IPPROTO_IPV6), CBerthLinux_IPV6_RECVPKTINFO, enabled ? 1 : 0)
        } else {
            try setOption(fd, Int32(IPPROTO_IP), CBerthLinux_IP_PKTINFO, enabled ? 1 : 0)
        }
    }
}

/// Receive and send buffers for `capacity` datagrams per system call; one per event loop.
package final class DatagramBatch {
    /// Datagrams per recvmmsg/sendmmsg call.
    package let capacity: Int
    /// Bytes per datagram buffer: 65,536 holds the largest UDP payload of either family
    /// (65,507 over IPv4, 65,527 over IPv6 without jumbograms), so nothing is truncated.
    package let bufferSize: Int

    /// Control space per received datagram: a pktinfo message needs 32 (IPv4) or 40 (IPv6);
    /// the rest leaves room for options an adopted socket may carry (timestamps), so the
    /// pktinfo is not the one cut off.
    private static let controlSpace = 128

    private let buffers: UnsafeMutableRawPointer
    private let messages: UnsafeMutablePointer<CBerthLinux_mmsghdr>
    private let iovecs: UnsafeMutablePointer<iovec>
    private let names: UnsafeMutablePointer<sockaddr_storage>
    private let controls: UnsafeMutableRawPointer
    private let outgoing: UnsafeMutablePointer<CBerthLinux_mmsghdr>
    /// Two per outgoing datagram: an optional prefix (a PROXY header), then the payload.
    private let outgoingIovecs: UnsafeMutablePointer<iovec>
    /// Room for each outgoing datagram's prefix.
    private let prefixes: UnsafeMutableRawPointer
    /// Bytes of prefix room per datagram.
    package static let prefixSpace = 64
    private let replyControl: UnsafeMutableRawPointer
    /// The header and control message (UDP_SEGMENT) of a segmented send.
    private let segmentHeader: UnsafeMutablePointer<msghdr>
    private let segmentControl: UnsafeMutableRawPointer
    /// linux/udp.h: the level and option of UDP_SEGMENT, and the most segments one send may carry.
    private static let solUDP: Int32 = 17
    private static let udpSegment: Int32 = 103
    public static let maxSegments = 64
    /// What one segmented send may carry in all: an IPv4 datagram's payload, less room for a header.
    public static let maxSegmentedBytes = 65_000
    /// Receive headers the kernel wrote last time, whose lengths must be reset.
    private var dirty: Int
    /// Datagrams queued for sending.
    package private(set) var queued = 0

    private static let v4InfoSize = MemoryLayout<in_pktinfo>.size
    private static let v6InfoSize = MemoryLayout<CBerthLinux_in6_pktinfo>.size

    package init(capacity: Int = 32, bufferSize: Int = 1 << 16) {
        precondition(capacity > 0 && bufferSize > 0)
        self.capacity = capacity
        self.bufferSize = bufferSize
        // Pages are touched only as datagrams fill them: 64-byte datagrams use one page a slot.
        buffers = .allocate(byteCount: capacity * bufferSize, alignment: 64)
        messages = .allocate(capacity: capacity)
        iovecs = .allocate(capacity: capacity)
        names = .allocate(capacity: capacity)
        controls = .allocate(byteCount: capacity * Self.controlSpace, alignment: 16)
        outgoing = .allocate(capacity: capacity)
        outgoingIovecs = .allocate(capacity: 2 * capacity)
        prefixes = .allocate(byteCount: capacity * Self.prefixSpace, alignment: 16)
        replyControl = .allocate(byteCount: Self.controlSpace, alignment: 16)
        replyControl.initializeMemory(as: UInt8.self, repeating: 0, count: Self.controlSpace)
        segmentHeader = .allocate(capacity: 1)
        segmentHeader.initialize(to: msghdr())
        segmentControl = .allocate(byteCount: Self.controlSpace, alignment: 16)
        segmentControl.initializeMemory(as: UInt8.self, repeating: 0, count: Self.controlSpace)
        for i in 0..<capacity {
            iovecs[i] = iovec(iov_base: buffers + i * bufferSize, iov_len: bufferSize)
            names[i] = sockaddr_storage()
            var header = msghdr()
            header.msg_name = UnsafeMutableRawPointer(names + i)
            header.msg_iov = iovecs + i
            header.msg_iovlen = 1
            header.msg_control = controls + i * Self.controlSpace
            messages[i] = CBerthLinux_mmsghdr(msg_hdr: header, msg_len: 0)
            outgoingIovecs[2 * i] = iovec(iov_base: nil, iov_len: 0)
            outgoingIovecs[2 * i + 1] = iovec(iov_base: nil, iov_len: 0)
            var out = msghdr()
            out.msg_iov = outgoingIovecs + 2 * i
            out.msg_iovlen = 1
            outgoing[i] = CBerthLinux_mmsghdr(msg_hdr: out, msg_len: 0)
        }
        dirty = capacity
    }

    deinit {
        buffers.deallocate()
        messages.deallocate()
        iovecs.deallocate()
        names.deallocate()
        controls.deallocate()
        outgoing.deallocate()
        outgoingIovecs.deallocate()
        prefixes.deallocate()
        replyControl.deallocate()
        segmentHeader.deallocate()
        segmentControl.deallocate()
    }

    // MARK: receiving

    /// recvmmsg: up to `capacity` datagrams into slots 0..<n. `.wouldBlock` when none waits.
    /// A pending socket error (ECONNREFUSED from an ICMP port unreachable) is thrown, and cleared.
    @inline(__always)
    package func receive(from fd: borrowing Descriptor) throws(SyscallError) -> IOResult<Int> {
        let fd = fd.raw
        for i in 0..<dirty {
            messages[i].msg_hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_storage>.size)
            messages[i].msg_hdr.msg_controllen = Self.controlSpace
            messages[i].msg_hdr.msg_flags = 0
        }
        let result: IOResult<Int32>
        do {
            result = try syscallNonBlocking("recvmmsg") { CBerthLinux_recvmmsg(fd, messages, UInt32(capacity), 0) }
        } catch {
            dirty = capacity
            throw error
        }
        switch result {
        case .done(let n):
            dirty = Int(n)
            return .done(Int(n))
        case .wouldBlock:
            dirty = 0
            return .wouldBlock
        }
    }

    /// Bytes of received datagram `i`.
    @inline(__always)
    package func length(_ i: Int) -> Int { Int(messages[i].msg_len) }

    /// MSG_TRUNC: datagram `i` was larger than its buffer, and what arrived is not all of it.
    @inline(__always)
    package func isTruncated(_ i: Int) -> Bool { messages[i].msg_hdr.msg_flags & CBerthLinux_MSG_TRUNC != 0 }

    /// The sender of datagram `i` as a `sockaddr`; valid until the next `receive`.
    @inline(__always)
    package func source(_ i: Int) -> UnsafeRawPointer { UnsafeRawPointer(names + i) }

    /// The bytes of datagram `i`; valid until the next `receive`.
    package func bytes(_ i: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: buffers + i * bufferSize, count: length(i))
    }

    /// The local address datagram `i` was sent to, from its IP_PKTINFO / IPV6_PKTINFO control
    /// message; nil when the socket does not ask for it, or the address cannot be a reply's
    /// source (IPv6 multicast).
    package func destination(_ i: Int) -> PacketInfo? {
        guard messages[i].msg_hdr.msg_controllen > 0 else { return nil }
        let header = UnsafeMutableRawPointer(messages + i).assumingMemoryBound(to: msghdr.self)
        var next = CBerthLinux_CMSG_FIRSTHDR(header)
        while let cmsg = next {
            let level = cmsg.pointee.cmsg_level
            let type = cmsg.pointee.cmsg_type
            guard let data = CBerthLinux_CMSG_DATA(cmsg).map(UnsafeRawPointer.init) else { return nil }
            if level == Int32(IPPROTO_IP), type == CBerthLinux_IP_PKTINFO,
                cmsg.pointee.cmsg_len >= CBerthLinux_CMSG_LEN(Self.v4InfoSize)
            {
                // ipi_spec_dst: the local address the datagram reached, even when it was sent to
                // a broadcast address (ipi_addr), so always a valid source for the reply.
                let offset = MemoryLayout<in_pktinfo>.offset(of: \.ipi_spec_dst) ?? 4
                let address = data.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
                return PacketInfo(high: UInt64(address), low: 0, isV6: false, interface: 0)
            }
            if level == Int32(IPPROTO_IPV6), type == CBerthLinux_IPV6_PKTINFO,
                cmsg.pointee.cmsg_len >= CBerthLinux_CMSG_LEN(Self.v6InfoSize)
            {
                let high = data.loadUnaligned(as: UInt64.self)
                let low = data.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
                let first = data.load(as: UInt8.self)
                if first == 0xff { return nil }  // multicast: not a source address
                let second = data.load(fromByteOffset: 1, as: UInt8.self)
                let linkLocal = first == 0xfe && second & 0xc0 == 0x80
                let interface = data.loadUnaligned(
                    fromByteOffset: MemoryLayout<CBerthLinux_in6_pktinfo>.offset(of: \.ipi6_ifindex)!,
                    as: UInt32.self
                )
                return PacketInfo(high: high, low: low, isV6: true, interface: linkLocal ? interface : 0)
            }
            next = CBerthLinux_CMSG_NXTHDR(header, cmsg)
        }
        return nil
    }

    // MARK: sending

    /// Empties the send queue.
    @inline(__always)
    package func clearQueue() { queued = 0 }

    /// Queues received datagram `i` to be sent from where it lies.
    @inline(__always)
    package func queue(_ i: Int) {
        let k = 2 * queued
        outgoingIovecs[k].iov_base = iovecs[i].iov_base
        outgoingIovecs[k].iov_len = Int(messages[i].msg_len)
        outgoingIovecs[k + 1].iov_len = 0
        outgoing[queued].msg_hdr.msg_iovlen = 1
        queued += 1
    }

    /// Queues received datagram `i` behind a prefix that `write` puts into the room it is given
    /// (`prefixSpace` bytes), returning its length: one datagram, prefix and payload, with no copy
    /// of the payload.
    @inline(__always)
    package func queue(_ i: Int, prefix write: (UnsafeMutableRawBufferPointer) -> Int) {
        let room = UnsafeMutableRawBufferPointer(start: prefixes + queued * Self.prefixSpace, count: Self.prefixSpace)
        let length = min(write(room), Self.prefixSpace)
        let k = 2 * queued
        outgoingIovecs[k].iov_base = room.baseAddress
        outgoingIovecs[k].iov_len = length
        outgoingIovecs[k + 1].iov_base = iovecs[i].iov_base
        outgoingIovecs[k + 1].iov_len = Int(messages[i].msg_len)
        outgoing[queued].msg_hdr.msg_iovlen = 2
        queued += 1
    }

    /// Payload bytes of queued datagram `k` (its prefix not counted).
    @inline(__always)
    package func queuedLength(_ k: Int) -> Int {
        outgoingIovecs[2 * k + Int(outgoing[k].msg_hdr.msg_iovlen) - 1].iov_len
    }

    /// Bytes of queued datagram `k`, its prefix included: what goes on the wire as its payload.
    @inline(__always)
    public func queuedTotal(_ k: Int) -> Int {
        outgoingIovecs[2 * k].iov_len + (outgoing[k].msg_hdr.msg_iovlen == 2 ? outgoingIovecs[2 * k + 1].iov_len : 0)
    }

    /// How many of the queued datagrams in `range`, from its start, one segmented send can carry:
    /// those of the first one's size, and one shorter to end the run; each of them under `below`
    /// bytes (a size a segmented send was refused for), at most `maxSegments` and
    /// `maxSegmentedBytes` in all. 1 or 0 when there is nothing to segment.
    @inline(__always)
    public func segmentable(_ range: Range<Int>, below limit: Int) -> Int {
        guard !range.isEmpty else { return 0 }
        let size = queuedTotal(range.lowerBound)
        guard size > 0, size < limit else { return 1 }
        var n = 1
        var total = size
        var k = range.lowerBound + 1
        while k < range.upperBound && n < Self.maxSegments {
            let next = queuedTotal(k)
            guard next > 0, next <= size, total + next <= Self.maxSegmentedBytes else { break }
            n += 1
            total += next
            k += 1
            if next < size { break }
        }
        return n
    }

    /// One sendmsg with UDP_SEGMENT of the queued datagrams in `range` (as `segmentable` counted
    /// them) to a connected socket's peer: all of them go, or none. EMSGSIZE, EINVAL or EIO say
    /// the path cannot segment them (a size over its MTU, no checksum offload): send them one by
    /// one instead, which may still pass (fragmented).
    @inline(__always)
    public func sendSegmented(
        _ fd: borrowing Descriptor,
        queued range: Range<Int>
    ) throws(SyscallError) -> IOResult<Int> {
        let fd = fd.raw
        let cmsg = segmentControl.assumingMemoryBound(to: cmsghdr.self)
        cmsg.pointee.cmsg_len = CBerthLinux_CMSG_LEN(MemoryLayout<UInt16>.size)
        cmsg.pointee.cmsg_level = Self.solUDP
        cmsg.pointee.cmsg_type = Self.udpSegment
        CBerthLinux_CMSG_DATA(cmsg).map(UnsafeMutableRawPointer.init)?
            .storeBytes(of: UInt16(truncatingIfNeeded: queuedTotal(range.lowerBound)), as: UInt16.self)
        segmentHeader.pointee.msg_name = nil
        segmentHeader.pointee.msg_namelen = 0
        segmentHeader.pointee.msg_iov = outgoingIovecs + 2 * range.lowerBound
        segmentHeader.pointee.msg_iovlen = 2 * range.count
        segmentHeader.pointee.msg_control = segmentControl
        segmentHeader.pointee.msg_controllen = CBerthLinux_CMSG_SPACE(MemoryLayout<UInt16>.size)
        segmentHeader.pointee.msg_flags = 0
        let header = segmentHeader
        let result = try syscallNonBlocking("sendmsg") { Glibc.sendmsg(fd, header, Int32(MSG_NOSIGNAL)) }
        switch result {
        case .done: return .done(range.count)
        case .wouldBlock: return .wouldBlock
        }
    }

    /// sendmmsg of the queued datagrams in `range`: to the socket's peer when `peer` is nil (a
    /// connected socket), else to `peer`, from `source` when given (IP_PKTINFO / IPV6_PKTINFO).
    /// Returns how many went; an error is about the first datagram that did not.
    @inline(__always)
    package func send(
        _ fd: borrowing Descriptor,
        queued range: Range<Int>,
        to peer: UnsafeRawPointer? = nil,
        length: socklen_t = 0,
        from source: PacketInfo? = nil
    ) throws(SyscallError) -> IOResult<Int> {
        let fd = fd.raw
        let controlLength = source.map { writeControl($0) } ?? 0
        let name = UnsafeMutableRawPointer(mutating: peer)
        for k in range {
            outgoing[k].msg_hdr.msg_name = name
            outgoing[k].msg_hdr.msg_namelen = peer == nil ? 0 : length
            outgoing[k].msg_hdr.msg_control = controlLength == 0 ? nil : replyControl
            outgoing[k].msg_hdr.msg_controllen = controlLength
        }
        let result = try syscallNonBlocking("sendmmsg") {
            CBerthLinux_sendmmsg(fd, outgoing + range.lowerBound, UInt32(range.count), Int32(MSG_NOSIGNAL))
        }
        switch result {
        case .done(let n): return .done(Int(n))
        case .wouldBlock: return .wouldBlock
        }
    }

    /// Writes the pktinfo control message for a reply from `source`; returns its space.
    private func writeControl(_ source: PacketInfo) -> Int {
        let cmsg = replyControl.assumingMemoryBound(to: cmsghdr.self)
        guard let data = CBerthLinux_CMSG_DATA(cmsg).map(UnsafeMutableRawPointer.init) else { return 0 }
        if source.isV6 {
            cmsg.pointee.cmsg_len = CBerthLinux_CMSG_LEN(Self.v6InfoSize)
            cmsg.pointee.cmsg_level = Int32(IPPROTO_IPV6)
            cmsg.pointee.cmsg_type = CBerthLinux_IPV6_PKTINFO
            var info = CBerthLinux_in6_pktinfo()
            withUnsafeMutableBytes(of: &info.ipi6_addr) { raw in
                raw.storeBytes(of: source.high, as: UInt64.self)
                raw.storeBytes(of: source.low, toByteOffset: 8, as: UInt64.self)
            }
            info.ipi6_ifindex = source.interface
            data.storeBytes(of: info, as: CBerthLinux_in6_pktinfo.self)
            return CBerthLinux_CMSG_SPACE(Self.v6InfoSize)
        }
        cmsg.pointee.cmsg_len = CBerthLinux_CMSG_LEN(Self.v4InfoSize)
        cmsg.pointee.cmsg_level = Int32(IPPROTO_IP)
        cmsg.pointee.cmsg_type = CBerthLinux_IP_PKTINFO
        var info = in_pktinfo()
        info.ipi_spec_dst.s_addr = UInt32(truncatingIfNeeded: source.high)
        data.storeBytes(of: info, as: in_pktinfo.self)
        return CBerthLinux_CMSG_SPACE(Self.v4InfoSize)
    }
}
