// Adoption: listeners bound by someone else (dockerd's -use-listen-fd, a docker-proxy shim's
// socket passed over the control socket, systemd's sockets) published like berth's own, through
// one path: `listener(adopting:)` makes a TCP socket listen if it only is bound and hands the
// descriptor to `Listener.adopt` (non-blocking, close-on-exec).

import Glibc
import LinuxIO
import Mappings
import Relay

extension Publisher {
    /// Adopts dockerd's `-use-listen-fd` socket, checked by `serve(_:inherited:)` to be `found`.
    func adopt(
        _ socket: consuming Descriptor,
        as found: PassedSocket,
        mapping: PortMapping
    ) throws(PublishError)
        -> BoundPort
    {
        let listener = try Self.listener(adopting: socket, proto: found.proto, label: "-use-listen-fd: \(found.label)")
        return try serialized { () throws(PublishError) in publishAdopted(listener, mapping: mapping, owner: nil).port }
    }

    /// Adopts a listener another process bound and passed over (a docker-proxy shim's, through
    /// the control socket), as its own publication: removed with `remove`, like an add's.
    package func adopt(
        _ socket: consuming Descriptor,
        mapping: PortMapping,
        owner: String?
    ) throws(PublishError) -> (id: PublicationID, port: BoundPort) {
        let listener = try Self.listener(adopting: socket, proto: mapping.proto, label: "passed socket")
        let (id, port) = try serialized { () throws(PublishError) in
            publishAdopted(listener, mapping: mapping, owner: owner)
        }
        return (PublicationID(raw: id), port)
    }

    /// The one adoption of a passed socket: listening if TCP (dockerd and systemd listen before
    /// they hand one over; one that is only bound is made to listen here), then the listener.
    private static func listener(
        adopting socket: consuming Descriptor,
        proto: Proto,
        label: String
    ) throws(PublishError) -> Listener {
        do {
            if proto == .tcp, try !Socket.isListening(socket) { try Socket.listen(socket, backlog: 4096) }
            return try Listener.adopt(socket)
        } catch {
            throw PublishError("\(label): \(error)")
        }
    }

    private func publishAdopted(
        _ listener: Listener,
        mapping: PortMapping,
        owner: String?
    ) -> (id: Int, port: BoundPort) {
        let port = BoundPort(mapping: mapping, address: listener.address, target: Self.target(of: mapping))
        // The engine that passed it (dockerd, a shim's dockerd) sets up its own DNAT, if any.
        let id = nextPublicationID()
        publish([Binding(port: port, listeners: [listener])], id: id, owner: owner)
        return (id, port)
    }

    /// Serves `mappings` through sockets a service manager passed (systemd socket activation)
    /// instead of binding: each socket serves the host addresses of the mapping it matches
    /// (`ActivationPlan`), and is adopted. All or nothing, as `bind`: DNAT rules are installed
    /// before any socket is taken, so a refused table leaves every socket to a fallback publisher.
    @discardableResult
    package func adopt(_ mappings: [PortMapping], sockets: borrowing PassedSockets) throws(PublishError) -> [BoundPort]
    {
        if options.mode == .kernel {
            // Its loops serve no listener: clients of the passed sockets would wait in their backlog.
            throw PublishError(
                "socket activation: --mode kernel serves no socket it is passed (use hybrid or userspace)"
            )
        }
        let found = try sockets.inspect()
        let plan = try ActivationPlan(mappings: mappings, sockets: found, hostAddresses: hostAddresses)
        let newPorts = plan.entries.flatMap(\.ports)
        return try serialized { () throws(PublishError) in
            let id = try newPublication(installing: newPorts)
            var bound: [Binding] = []
            for entry in plan.entries {
                let passed = found[entry.socket]
                guard let socket = sockets.take(entry.socket) else {
                    throw PublishError("socket activation: \(passed) was adopted already")
                }
                bound.append(
                    Binding(
                        ports: entry.ports,
                        listeners: [try Self.listener(adopting: socket, proto: passed.proto, label: "\(passed)")]
                    )
                )
            }
            publish(bound, id: id)
            return newPorts
        }
    }
}
