// systemd socket activation: the service manager binds the host side (ListenStream=,
// ListenDatagram=) and passes the sockets; berth serves each through the `-p` mapping it matches
// instead of binding one itself. The environment (LISTEN_FDS and friends) is taken in Inherited.swift
// and read by `ListenFDs` (Mappings); which socket serves what is decided here.
//
// The rules, so that a unit file and a command line that disagree fail at start with one line:
// - a socket matches a mapping's host address when the protocol is the same, its port is the
//   mapping's host port (or in its range; an ephemeral host port matches nothing), and its address
//   is the host address, or it is a dual-stack `::` socket (systemd's default for `ListenStream=8080`)
//   and the mapping publishes on all addresses: then it serves both `0.0.0.0` and `::`;
// - every host address of every mapping needs exactly one socket (berth binds nothing itself when
//   started this way), and every socket must serve one mapping.

import Glibc
import LinuxIO
import Mappings

/// A socket another process bound and passed (a service manager's, dockerd's fd 4), as berth
/// found it. The descriptor itself is owned by `PassedSockets` (or the caller) until adopted.
package struct PassedSocket: Sendable, CustomStringConvertible {
    /// How messages name it: `fd 3`, the number it was passed as.
    package let label: String
    /// Its name in LISTEN_FDNAMES (FileDescriptorName=), "unknown" without one.
    package let name: String
    package let address: SocketAddress
    package let proto: Proto
    /// An IPv6 wildcard socket without IPV6_V6ONLY: it takes IPv4 clients too.
    package let dualStack: Bool

    package init(label: String, name: String = "unknown", address: SocketAddress, proto: Proto, dualStack: Bool = false)
    {
        self.label = label
        self.name = name
        self.address = address
        self.proto = proto
        self.dualStack = dualStack
    }

    /// What `fd` is: getsockname, SO_TYPE, SO_PROTOCOL and IPV6_V6ONLY. Errors begin with
    /// `context` and the socket's label (`socket activation: fd 3 (web)`, `-use-listen-fd: fd 4`).
    package static func inspect(
        _ fd: borrowing Descriptor,
        name: String = "unknown",
        context: String = "socket activation"
    ) throws(PublishError) -> PassedSocket {
        let label = "fd \(fd.raw)"
        let what = "\(context): \(label)" + (name == "unknown" ? "" : " (\(name))")
        do {
            let address = try Socket.localAddress(fd)
            guard address.family == AF_INET || address.family == AF_INET6 else {
                throw PublishError("\(what) is not an IPv4 or IPv6 socket")
            }
            let type = try Socket.type(fd)
            let protocolNumber = try Socket.getOption(fd, SOL_SOCKET, SO_PROTOCOL)
            let proto: Proto
            if type == Int32(SOCK_STREAM.rawValue) && protocolNumber == Int32(IPPROTO_TCP) {
                proto = .tcp
            } else if type == Int32(SOCK_DGRAM.rawValue) && protocolNumber == Int32(IPPROTO_UDP) {
                proto = .udp
            } else {
                throw PublishError("\(what) is neither a TCP nor a UDP socket")
            }
            let dualStack = address.isV6 && address.isWildcard ? !(try Socket.isV6Only(fd)) : false
            return PassedSocket(label: label, name: name, address: address, proto: proto, dualStack: dualStack)
        } catch let error as PublishError {
            throw error
        } catch {
            throw PublishError("\(what): \(error)")
        }
    }

    /// `fd 3 [::]:8080/tcp`, with its name when it has one: `fd 3 "web" [::]:8080/tcp`.
    package var description: String {
        "\(label) " + (name == "unknown" ? "" : "\"\(name)\" ") + "\(address)/\(proto)"
    }
}

/// The sockets a service manager passed (LISTEN_FDS), owned here until a publisher adopts them;
/// what is not adopted closes with this.
package struct PassedSockets: ~Copyable {
    /// One per socket, in order: LISTEN_FDNAMES' names, or "unknown".
    package let names: [String]
    private let owned: DescriptorSlots

    /// Takes ownership of `descriptors`.
    init(taking descriptors: Range<Int32>, names: [String]) {
        self.names = names
        owned = DescriptorSlots(capacity: descriptors.count)
        for (slot, raw) in descriptors.enumerated() { _ = owned.put(Descriptor(taking: raw), at: slot) }
    }

    package var count: Int { names.count }

    /// What each socket is, in order; the first that is not an IPv4 or IPv6 TCP or UDP socket
    /// is an error. Each still here, or none of them if one was adopted already.
    package func inspect() throws(PublishError) -> [PassedSocket] {
        var found: [PassedSocket] = []
        for slot in 0..<count {
            let name = names[slot]
            guard
                let socket = try owned.with(
                    slot,
                    { (s) throws(PublishError) in try PassedSocket.inspect(s, name: name) }
                )
            else {
                throw PublishError("socket activation: the passed sockets were adopted already")
            }
            found.append(socket)
        }
        return found
    }

    /// The descriptor of socket `slot`, now the caller's; nil if it was taken before.
    func take(_ slot: Int) -> Descriptor? { owned.take(slot) }
}

/// Which passed socket serves which host addresses of which mapping (the rules at the top).
package struct ActivationPlan {
    package struct Entry {
        /// Index into the sockets.
        package let socket: Int
        /// The host addresses it serves, in the order berth reports them.
        package var ports: [BoundPort]
    }

    /// One per socket, in the order of the mappings they serve.
    package private(set) var entries: [Entry] = []

    package init(
        mappings: [PortMapping],
        sockets: [PassedSocket],
        hostAddresses: (PortMapping) -> [IPAddress]
    ) throws(PublishError) {
        var owner = [Int?](repeating: nil, count: sockets.count)  // mapping index per socket
        var entryOf = [Int?](repeating: nil, count: sockets.count)
        for (m, mapping) in mappings.enumerated() {
            guard mapping.proto == .tcp || mapping.proto == .udp else {
                throw PublishError("\(mapping.proto) is not supported: \(mapping)")
            }
            for host in hostAddresses(mapping) {
                let matches = sockets.indices.filter { Self.serves(sockets[$0], mapping, host) }
                guard let k = matches.first else {
                    throw PublishError(
                        "socket activation: \(mapping.containerSide): no socket was passed for \(Self.hostText(host, mapping))"
                            + " (started with LISTEN_FDS, berth binds nothing itself)"
                    )
                }
                if matches.count > 1 {
                    throw PublishError(
                        "socket activation: \(mapping.containerSide): \(sockets[matches[0]]) and \(sockets[matches[1]]) both match \(Self.hostText(host, mapping))"
                    )
                }
                if let other = owner[k], other != m {
                    throw PublishError(
                        "socket activation: \(sockets[k]) matches both -p \(mappings[other]) and -p \(mapping)"
                    )
                }
                owner[k] = m
                let socket = sockets[k]
                let address =
                    socket.address.isV6 == host.isV6
                    ? socket.address : SocketAddress(ip: host.bytes, port: socket.address.port)
                let port = BoundPort(mapping: mapping, address: address, target: Publisher.target(of: mapping))
                if let e = entryOf[k] {
                    entries[e].ports.append(port)
                } else {
                    entryOf[k] = entries.count
                    entries.append(Entry(socket: k, ports: [port]))
                }
            }
        }
        if let unused = sockets.indices.first(where: { owner[$0] == nil }) {
            throw PublishError("socket activation: \(sockets[unused]) matches no -p mapping")
        }
    }

    private static func serves(_ socket: PassedSocket, _ mapping: PortMapping, _ host: IPAddress) -> Bool {
        guard socket.proto == mapping.proto else { return false }
        let port = socket.address.port
        switch mapping.hostPort {
        case .fixed(let wanted): if port != wanted { return false }
        case .anyOf(let range): if port < range.first || port > range.last { return false }
        case .ephemeral: return false
        }
        let ip = IPAddress(socket.address)
        if ip == host { return true }
        return mapping.hostIP == nil && socket.dualStack && host == .anyV4
    }

    /// `0.0.0.0:8080`, `[::]:8000-8010`, or for an ephemeral port why none can match.
    private static func hostText(_ host: IPAddress, _ mapping: PortMapping) -> String {
        switch mapping.hostPort {
        case .ephemeral: return "\(host) (a port the system picks cannot come from a passed socket: give the host port)"
        default: return "\(host.bracketed):\(mapping.hostPort)"
        }
    }
}
