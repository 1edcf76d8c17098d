import Glibc
import LinuxIO
import Synchronization

/// A bound socket that receives clients: a TCP listener or a UDP socket. Owns its descriptor;
/// the loop that serves it (or the loops, for a shared one) borrow the number.
public final class Listener: Sendable {
    package let descriptor: Descriptor
    /// The address actually bound: with the port the kernel chose when asked for 0.
    public let address: SocketAddress
    public let isTCP: Bool

    /// When any loop last ran out of descriptors on this listener (monotonic nanoseconds), and
    /// whether a warning is out that no "accepting again" has answered yet. One warning per
    /// episode, for all loops together; an episode ends after a quiet second.
    let lastExhausted = Atomic<UInt64>(0)
    let warned = Atomic<Bool>(false)

    init(descriptor: consuming Descriptor, address: SocketAddress, isTCP: Bool) {
        self.descriptor = descriptor
        self.address = address
        self.isTCP = isTCP
    }

    /// Binds and listens. IPv6 sockets are IPV6_V6ONLY, so `::` and `0.0.0.0` on the same
    /// port are two sockets, as Docker does. SO_REUSEADDR lets a restart bind while old
    /// connections sit in TIME_WAIT.
    /// With `listen: false` the port is only reserved (the kernel path serves it): a client
    /// that reaches it anyway is refused rather than left waiting in a backlog.
    public static func tcp(
        _ address: SocketAddress,
        backlog: Int32 = 4096,
        listen: Bool = true,
        sharing: PortSharing = .none
    ) throws(SyscallError) -> Listener {
        let socket = try Socket.tcpListener(address, backlog: listen ? backlog : nil, sharing: sharing)
        let bound = try Socket.localAddress(socket)
        return Listener(descriptor: socket, address: bound, isTCP: true)
    }

    /// A UDP listener's receive buffer: 4 MiB (the kernel doubles it for bookkeeping). All of a
    /// port's clients land in this one queue, and a 64-byte datagram costs the kernel about 1 KiB
    /// of buffer (skb overhead), so this holds some 8,000 datagrams, about 8 ms at a million a
    /// second: enough to ride out a loop that is busy elsewhere. Past net.core.rmem_max only
    /// with CAP_NET_ADMIN (SO_RCVBUFFORCE); otherwise the kernel caps it there.
    public static let udpReceiveBuffer = 4 << 20

    /// Binds a UDP socket. IPv6 sockets are IPV6_V6ONLY, as for TCP. No SO_REUSEADDR: for UDP it
    /// would let a second process bind the same port and silently take half the datagrams.
    /// A wildcard socket (`0.0.0.0`, `::`) asks for IP_PKTINFO / IPV6_RECVPKTINFO, so that
    /// replies can leave from the address each client sent to.
    public static func udp(
        _ address: SocketAddress,
        receiveBuffer: Int = udpReceiveBuffer,
        sharing: PortSharing = .none
    ) throws(SyscallError) -> Listener {
        let socket = try Socket.make(family: address.family, type: Int32(SOCK_DGRAM.rawValue))
        if address.isV6 { try Socket.setOption(socket, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 1) }
        Socket.setReceiveBuffer(socket, bytes: receiveBuffer)
        if address.isWildcard { try Socket.setPacketInfo(socket, v6: address.isV6, true) }
        try Socket.bind(socket, address, sharing: sharing)
        let bound = try Socket.localAddress(socket)
        return Listener(descriptor: socket, address: bound, isTCP: false)
    }

    /// Adopts a socket someone else bound (dockerd's `-use-listen-fd`): made non-blocking.
    /// The descriptor is the listener's from here on, also when this throws (then it is closed).
    package static func adopt(_ fd: consuming Descriptor) throws(SyscallError) -> Listener {
        try Socket.makeNonBlocking(fd)
        let type = try Socket.type(fd)
        let bound = try Socket.localAddress(fd)
        let isTCP = type == Int32(SOCK_STREAM.rawValue)
        if isTCP { Socket.setNoDelay(fd) }  // inherited by the clients it accepts
        if !isTCP && bound.isWildcard {
            // Best effort: without it replies leave from whatever address the kernel picks.
            try? Socket.setPacketInfo(fd, v6: bound.isV6, true)
        }
        return Listener(descriptor: fd, address: bound, isTCP: isTCP)
    }
}
