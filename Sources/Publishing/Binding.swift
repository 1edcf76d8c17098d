// Binding: a mapping's host addresses, a listener per loop on each (or one the loops share),
// the ports tried in a range, and the one line a user sees when none can be had.

import Glibc
import LinuxIO
import Logging
import Mappings
import Netfilter
import Relay
import Synchronization

extension Publisher {
    /// Binds every mapping and, in kernel and hybrid mode, installs its DNAT rules in one
    /// batch before returning, so a reported port is served. All or nothing: on any failure
    /// what was bound is closed again and no rule is left.
    @discardableResult
    package func bind(_ mappings: [PortMapping]) throws(PublishError) -> [BoundPort] {
        try add(mappings).ports
    }

    /// `bind`, also while the loops run: the new listeners join every loop at its next wake-up.
    /// `owner` (a container, a client of the control API) labels the ports' metrics.
    /// `proxyProtocol` and `proxyProtocolUDP` ask these ports for PROXY protocol headers on top of
    /// what the options ask of every port; the relay alone sends them, so only in userspace mode.
    package func add(
        _ mappings: [PortMapping],
        owner: String? = nil,
        proxyProtocol: ProxyProtocol? = nil,
        proxyProtocolUDP: Bool = false
    ) throws(PublishError) -> (
        id: PublicationID, ports: [BoundPort]
    ) {
        try serialized { () throws(PublishError) in
            try addSerialized(mappings, owner: owner, proxyProtocol: proxyProtocol, proxyProtocolUDP: proxyProtocolUDP)
        }
    }

    func addSerialized(
        _ mappings: [PortMapping],
        owner: String?,
        proxyProtocol: ProxyProtocol?,
        proxyProtocolUDP: Bool
    ) throws(PublishError) -> (id: PublicationID, ports: [BoundPort]) {
        if (proxyProtocol != nil || proxyProtocolUDP) && options.mode != .userspace {
            throw PublishError("PROXY protocol headers need --mode userspace: the kernel path sends none")
        }
        try DescriptorBudget.check(mappings, options: options)
        var bound: [Binding] = []
        for mapping in mappings {
            guard mapping.proto == .tcp || mapping.proto == .udp else {
                throw PublishError("\(mapping.proto) is not supported: \(mapping)")
            }
            bound += try bindOne(mapping)
        }
        for i in bound.indices {
            bound[i].options.proxyProtocol = proxyProtocol
            bound[i].options.proxyProtocolUDP = proxyProtocolUDP
        }
        let newPorts = bound.flatMap(\.ports)
        let id = try newPublication(installing: newPorts)
        publish(bound, id: id, owner: owner)
        return (PublicationID(raw: id), newPorts)
    }

    static func target(of mapping: PortMapping) -> SocketAddress {
        SocketAddress(ip: mapping.containerIP.bytes, port: mapping.containerPort)
    }

    /// The host addresses a mapping binds: one, or `0.0.0.0` and `::` for all addresses.
    /// The kernel path alone cannot cross families, so it binds only the container's family.
    func hostAddresses(_ mapping: PortMapping) -> [IPAddress] {
        if let ip = mapping.hostIP { return [ip] }
        if options.mode == .kernel { return [mapping.containerIP.unmapped.isV6 ? .anyV6 : .anyV4] }
        return [.anyV4, .anyV6]
    }

    func bindOne(_ mapping: PortMapping) throws(PublishError) -> [Binding] {
        let target = Self.target(of: mapping)
        let hosts = hostAddresses(mapping)
        let candidates: [UInt16]
        switch mapping.hostPort {
        case .fixed(let port): candidates = [port]
        case .ephemeral: candidates = [0, 0, 0, 0, 0, 0, 0, 0]  // retried when `::` has the port taken
        case .anyOf(let range): candidates = Array(range.first...range.last)
        }
        var lastError: SyscallError?
        for candidate in candidates {
            var port = candidate
            var got: [Binding] = []
            var failed = false
            for host in hosts {
                do {
                    let listeners = try listen(mapping.proto, SocketAddress(ip: host.bytes, port: port))
                    port = listeners[0].address.port
                    var binding = Binding(
                        port: BoundPort(mapping: mapping, address: listeners[0].address, target: target),
                        listeners: listeners
                    )
                    if mapping.proto == .udp {
                        binding.udpBudget = UDPFlowBudget(limit: options.relay.udpMaxFlows, loops: listeners.count)
                    }
                    got.append(binding)
                } catch {
                    // A host with IPv6 turned off still publishes on IPv4 for an all-address binding.
                    if mapping.hostIP == nil, host.isV6, error.errno == .addressFamilyNotSupported { continue }
                    lastError = error
                    failed = true
                    break
                }
            }
            if !failed { return got }
            // Closing `got` here (dropping it) frees the ports for the next candidate.
            if case .fixed = mapping.hostPort { break }
            if let e = lastError, e.errno != .addressInUse && e.errno != .permissionDenied { break }
        }
        guard let lastError else { throw PublishError("\(mapping.containerSide): no host address to bind") }
        throw Self.explain(lastError, mapping)
    }

    /// A TCP or UDP listener on `address` for each loop, the first binding the port (the kernel's
    /// choice for port 0) and checking that nobody holds it, the others joining it.
    /// In kernel mode a port is only reserved, by one socket: DNAT serves it, loopback TCP
    /// clients are refused.
    func listen(_ proto: Proto, _ address: SocketAddress) throws(SyscallError) -> [Listener] {
        let count = options.mode == .kernel ? 1 : max(1, options.threads)
        var listeners: [Listener] = []
        var address = address
        for i in 0..<count {
            let sharing: PortSharing = count == 1 ? .none : (i == 0 ? .first : .member)
            let listener =
                proto == .udp
                ? try Listener.udp(address, sharing: sharing)
                : try Listener.tcp(address, listen: options.mode != .kernel, sharing: sharing)
            address = listener.address
            listeners.append(listener)
        }
        return listeners
    }

    static func explain(_ error: SyscallError, _ mapping: PortMapping) -> PublishError {
        var text = "\(mapping.containerSide): \(error)"
        if case .anyOf(let range) = mapping.hostPort {
            text = "\(mapping.containerSide): no free host port in \(range): last tried \(error)"
        }
        if error.errno == .permissionDenied {
            text += " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        }
        return PublishError(text, bindErrno: error.errno)
    }
}
