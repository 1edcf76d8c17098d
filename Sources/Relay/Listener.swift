import Glibc
import LinuxIO

/// A bound socket that receives clients: a TCP listener or a UDP socket. Owns its descriptor;
/// loops that serve it borrow the number.
public final class Listener: Sendable {
    public let descriptor: Descriptor
    /// The address actually bound: with the port the kernel chose when asked for 0.
    public let address: SocketAddress
    public let isTCP: Bool

    public var fd: Int32 { descriptor.raw }

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
    public static func tcp(_ address: SocketAddress, backlog: Int32 = 4096, listen: Bool = true) throws(SyscallError) -> Listener {
        let socket = try Socket.make(family: address.family, type: Int32(SOCK_STREAM.rawValue))
        try Socket.setOption(socket.raw, SOL_SOCKET, SO_REUSEADDR, 1)
        if address.isV6 { try Socket.setOption(socket.raw, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 1) }
        try Socket.bind(socket.raw, address)
        do {
            if listen { try Socket.listen(socket.raw, backlog: backlog) }
        } catch {
            throw error.about(address.description)
        }
        let bound = try Socket.localAddress(socket.raw)
        return Listener(descriptor: socket, address: bound, isTCP: true)
    }

    /// Adopts a socket someone else bound (dockerd's `-use-listen-fd`): made non-blocking.
    public static func adopt(_ fd: Int32) throws(SyscallError) -> Listener {
        try Socket.makeNonBlocking(fd)
        let type = try Socket.type(fd)
        let bound = try Socket.localAddress(fd)
        return Listener(descriptor: Descriptor(taking: fd), address: bound, isTCP: type == Int32(SOCK_STREAM.rawValue))
    }
}
