// Listening sockets, built one way: the relay's listeners (Relay/Listener.swift) and the control
// server's TCP metrics port both come from here.

import CBerthLinux
import Glibc
import SystemPackage

/// How a listening socket shares its port with the other loops' sockets (SO_REUSEPORT).
public enum PortSharing: Sendable {
    /// Alone on its port.
    case none
    /// The first of a group: bound without SO_REUSEPORT, so the bind fails if anyone else
    /// holds the port (another berth's group included), and only then opened to the others.
    case first
    /// Joins the group `first` opened (same port, same user).
    case member
}

extension Socket {
    /// A TCP socket bound to `address` and, with a `backlog`, listening; without one the port is
    /// only reserved (the kernel path serves it), so a client that reaches it anyway is refused
    /// rather than left waiting. IPv6 sockets are IPV6_V6ONLY, so `::` and `0.0.0.0` on the same
    /// port are two sockets, as Docker does. SO_REUSEADDR lets a restart bind while old
    /// connections sit in TIME_WAIT.
    package static func tcpListener(
        _ address: SocketAddress,
        backlog: Int32?,
        sharing: PortSharing = .none
    ) throws(SyscallError) -> Descriptor {
        let socket = try make(family: address.family, type: Int32(SOCK_STREAM.rawValue))
        try setOption(socket, SOL_SOCKET, SO_REUSEADDR, 1)
        if address.isV6 { try setOption(socket, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 1) }
        // Accepted sockets inherit it: one setsockopt per listener instead of one per client.
        setNoDelay(socket)
        try bind(socket, address, sharing: sharing)
        do {
            if let backlog { try listen(socket, backlog: backlog) }
        } catch {
            throw error.about(address.description)
        }
        return socket
    }

    /// bind(2) as one of a SO_REUSEPORT group: the option is set after the bind for the first,
    /// so the bind itself is an exclusive one and a port another process (or another berth)
    /// holds is "in use", as it is with a single socket. The kernel checks the flag when the
    /// next socket binds. What this cannot stop: a process of the same user that binds with
    /// SO_REUSEPORT later joins the group and gets a share of the clients, as it would with any
    /// SO_REUSEPORT server.
    package static func bind(
        _ fd: borrowing Descriptor,
        _ address: SocketAddress,
        sharing: PortSharing
    ) throws(SyscallError) {
        if sharing == .member { try setReusePort(fd) }
        try bind(fd, address)
        if sharing == .first { try setReusePort(fd) }
    }
}
