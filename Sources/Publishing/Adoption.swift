// Adoption: listeners bound by someone else (dockerd's -use-listen-fd, a docker-proxy shim's
// socket passed over the control socket, systemd's sockets) published like berth's own.

import Glibc
import LinuxIO
import Logging
import Mappings
import Netfilter
import Relay
import Synchronization

extension Publisher {
    /// Adopts a listener bound by someone else (dockerd's `-use-listen-fd`).
    public func adopt(_ fd: Int32, mapping: PortMapping) throws(PublishError) -> BoundPort {
        try serialized { () throws(PublishError) in try adoptSerialized(fd, mapping: mapping, owner: nil).port }
    }

    /// Adopts a listener another process bound and passed over (a docker-proxy shim's, through
    /// the control socket), as its own publication: removed with `remove`, like an add's.
    public func adopt(
        _ socket: consuming Descriptor,
        mapping: PortMapping,
        owner: String?
    ) throws(PublishError) -> (id: PublicationID, port: BoundPort) {
        let fd = socket.release()
        do {
            let (id, port) = try serialized { () throws(PublishError) in
                try adoptSerialized(fd, mapping: mapping, owner: owner)
            }
            return (PublicationID(raw: id), port)
        } catch {
            // Listener.adopt failed before it took the descriptor over.
            Descriptor(taking: fd).close()
            throw error
        }
    }

    func adoptSerialized(
        _ fd: Int32,
        mapping: PortMapping,
        owner: String?
    ) throws(PublishError) -> (id: Int, port: BoundPort) {
        let listener: Listener
        do {
            listener = try Listener.adopt(fd)
        } catch {
            throw PublishError("listen fd \(fd): \(error)")
        }
        let port = BoundPort(mapping: mapping, address: listener.address, target: Self.target(of: mapping))
        // The engine that passed it (dockerd, a shim) sets up its own DNAT, if any.
        let id = try newPublication(installing: [])
        publish([Binding(port: port, listeners: [listener])], id: id, owner: owner)
        return (id, port)
    }

    /// Serves `mappings` through sockets a service manager passed (systemd socket activation)
    /// instead of binding: each socket serves the host addresses of the mapping it matches
    /// (`ActivationPlan`), and is adopted (non-blocking, close-on-exec, listening if TCP). All or
    /// nothing, as `bind`: DNAT rules are installed before any socket is adopted, so a refused
    /// table leaves the sockets to a fallback publisher.
    @discardableResult
    public func adopt(_ mappings: [PortMapping], sockets: [PassedSocket]) throws(PublishError) -> [BoundPort] {
        try serialized { () throws(PublishError) in try adoptSerialized(mappings, sockets: sockets) }
    }

    func adoptSerialized(_ mappings: [PortMapping], sockets: [PassedSocket]) throws(PublishError) -> [BoundPort] {
        if options.mode == .kernel {
            // Its loops serve no listener: clients of the passed sockets would wait in their backlog.
            throw PublishError(
                "socket activation: --mode kernel serves no socket it is passed (use hybrid or userspace)"
            )
        }
        let plan = try ActivationPlan(mappings: mappings, sockets: sockets, hostAddresses: hostAddresses)
        let newPorts = plan.entries.flatMap(\.ports)
        let id = try newPublication(installing: newPorts)
        var bound: [Binding] = []
        for entry in plan.entries {
            let socket = sockets[entry.socket]
            let listener: Listener
            do {
                if socket.proto == .tcp, try !Socket.isListening(socket.fd) {
                    try Socket.listen(socket.fd, backlog: 4096)
                }
                listener = try Listener.adopt(socket.fd)
            } catch {
                throw PublishError("\(socket): \(error)")
            }
            bound.append(Binding(ports: entry.ports, listeners: [listener]))
        }
        publish(bound, id: id)
        return newPorts
    }
}
