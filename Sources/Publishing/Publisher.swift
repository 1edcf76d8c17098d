// Publishing turns a set of port mappings into bound listeners and running event loops,
// and takes them down again. The CLI (standalone and docker-proxy modes) and bench/
// both drive this one type, so the CLI stays thin.

import Glibc
import LinuxIO
import Logging
import Mappings
import Netfilter
import Relay

/// Something went wrong while publishing; the text is the one line a user sees.
public struct PublishError: Error, CustomStringConvertible, Sendable {
    public let description: String
    /// The kernel refused berth's nftables table: the userspace relay alone could still serve.
    public let isKernelPathFailure: Bool
    public init(_ description: String, isKernelPathFailure: Bool = false) {
        self.description = description
        self.isKernelPathFailure = isKernelPathFailure
    }
}

/// One bound listener: which mapping it serves and where it listens.
public struct BoundPort: Sendable {
    public let mapping: PortMapping
    public let address: SocketAddress
    public let target: SocketAddress

    /// `docker port` style: `80/tcp -> 0.0.0.0:49153`.
    public var line: String { "\(mapping.containerSide) -> \(address)" }
}

public struct PublishOptions: Sendable {
    public var relay = RelayConfig()
    /// Event loops (threads). Each serves every TCP listener (EPOLLEXCLUSIVE wakes one); a UDP
    /// listener belongs to one loop (its flows' sockets live there), handed out round-robin.
    public var threads = 1
    public var mode = Mode.userspace
    /// How long each loop polls before it sleeps (0: never polls). Cuts the wake-up latency of an
    /// idle CPU, at the cost of CPU time while traffic pauses.
    public var busyPoll: Duration = .zero
    /// berth's nftables table (`inet` family); nil: `berth_<pid>`, so several berths coexist.
    public var tableName: String?
    public init() {}
}

public final class Publisher {
    public let options: PublishOptions
    public private(set) var ports: [BoundPort] = []
    private var listeners: [Listener] = []
    private let logger: Logger
    private var natTable: NatTable?
    /// The DNAT rules installed for `ports`.
    public private(set) var kernelRules: [DNATRule] = []
    /// Stops the loops from any thread, also before they start.
    public let stopper = Stopper()
    private var contexts: [RelayContext] = []

    public init(options: PublishOptions = PublishOptions(), logger: Logger = Logger(label: "berth")) {
        self.options = options
        self.logger = logger
    }

    // MARK: binding

    /// Binds every mapping and, in kernel and hybrid mode, installs its DNAT rules in one
    /// batch before returning, so a reported port is served. All or nothing: on any failure
    /// what was bound is closed again and no rule is left.
    @discardableResult
    public func bind(_ mappings: [PortMapping]) throws(PublishError) -> [BoundPort] {
        try DescriptorBudget.check(mappings, options: options)
        var bound: [(Listener, BoundPort)] = []
        for mapping in mappings {
            guard mapping.proto == .tcp || mapping.proto == .udp else {
                throw PublishError("\(mapping.proto) is not supported: \(mapping)")
            }
            bound += try bindOne(mapping)
        }
        let newPorts = bound.map(\.1)
        if options.mode != .userspace {
            try installRules(for: newPorts)
        }
        listeners += bound.map(\.0)
        ports += newPorts
        return newPorts
    }

    private func installRules(for newPorts: [BoundPort]) throws(PublishError) {
        if options.mode == .kernel, let port = newPorts.first(where: { !KernelPath.canServe($0) }) {
            throw PublishError(KernelPath.refusal(port))
        }
        let rules = newPorts.filter(KernelPath.canServe).map(KernelPath.rule(for:))
        if rules.isEmpty { return }
        do {
            if natTable == nil {
                natTable = try NatTable(name: options.tableName ?? NatTable.defaultName())
            }
            try natTable!.add(rules)
        } catch {
            throw PublishError("\(error)", isKernelPathFailure: true)
        }
        kernelRules += rules
    }

    /// Adopts a listener bound by someone else (dockerd's `-use-listen-fd`).
    public func adopt(_ fd: Int32, mapping: PortMapping) throws(PublishError) -> BoundPort {
        let listener: Listener
        do {
            listener = try Listener.adopt(fd)
        } catch {
            throw PublishError("listen fd \(fd): \(error)")
        }
        let port = BoundPort(mapping: mapping, address: listener.address, target: Self.target(of: mapping))
        listeners.append(listener)
        ports.append(port)
        return port
    }

    private static func target(of mapping: PortMapping) -> SocketAddress {
        SocketAddress(ip: mapping.containerIP.bytes, port: mapping.containerPort)
    }

    /// The host addresses a mapping binds: one, or `0.0.0.0` and `::` for all addresses.
    /// The kernel path alone cannot cross families, so it binds only the container's family.
    private func hostAddresses(_ mapping: PortMapping) -> [IPAddress] {
        if let ip = mapping.hostIP { return [ip] }
        if options.mode == .kernel { return [mapping.containerIP.unmapped.isV6 ? .anyV6 : .anyV4] }
        return [.anyV4, .anyV6]
    }

    private func bindOne(_ mapping: PortMapping) throws(PublishError) -> [(Listener, BoundPort)] {
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
            var got: [(Listener, BoundPort)] = []
            var failed = false
            for host in hosts {
                do {
                    let listener = try listen(mapping.proto, SocketAddress(ip: host.bytes, port: port))
                    port = listener.address.port
                    got.append((listener, BoundPort(mapping: mapping, address: listener.address, target: target)))
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
        throw Self.explain(lastError!, mapping)
    }

    /// A TCP or UDP listener on `address`.
    /// In kernel mode a TCP port is only reserved: DNAT serves it, loopback clients are refused.
    private func listen(_ proto: Proto, _ address: SocketAddress) throws(SyscallError) -> Listener {
        proto == .udp ? try Listener.udp(address) : try Listener.tcp(address, listen: options.mode != .kernel)
    }

    private static func explain(_ error: SyscallError, _ mapping: PortMapping) -> PublishError {
        var text = "\(mapping.containerSide): \(error)"
        if case .anyOf(let range) = mapping.hostPort {
            text = "\(mapping.containerSide): no free host port in \(range): last tried \(error)"
        }
        if error.errno == .permissionDenied {
            text += " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        }
        return PublishError(text)
    }

    // MARK: running

    /// Runs the loops until SIGINT/SIGTERM or `stop()`. Loop 0 runs on the calling thread.
    /// Signals are blocked here first so that only the signalfd sees them.
    public func run(signals: [Int32] = [SIGINT, SIGTERM]) throws(PublishError) {
        if !signals.isEmpty { EventLoop.blockSignals(signals) }
        var loops: [EventLoop] = []
        var udpRelays: [UDPRelay] = []
        // Closes the UDP flows once no loop runs any more.
        defer { for relay in udpRelays { relay.stop() } }
        let loopCount = max(1, options.threads)
        let udp = options.mode == .kernel ? [] : zip(listeners, ports).filter { !$0.0.isTCP }
        var relay = options.relay
        relay.spreadAccepts = loopCount > 1
        do {
            for index in 0..<loopCount {
                let loop = try EventLoop()
                loop.busyPoll = options.busyPoll.nanosecondsClamped
                let context = RelayContext(loop: loop, config: relay, logger: logger)
                for (listener, port) in zip(listeners, ports) where listener.isTCP && options.mode != .kernel {
                    try TCPAcceptor(listener: listener, target: port.target, context: context).start()
                }
                for (k, (listener, port)) in udp.enumerated() where k % loopCount == index {
                    let relay = UDPRelay(listener: listener, target: port.target, context: context)
                    try relay.start()
                    udpRelays.append(relay)
                }
                loops.append(loop)
                contexts.append(context)
                stopper.add(loop.waker)
            }
            if !signals.isEmpty {
                let stopper = self.stopper
                let logger = self.logger
                try loops[0].watchSignals(signals) { signal in
                    logger.debug("signal \(signal): stopping")
                    stopper.stop()
                }
            }
        } catch {
            throw PublishError("\(error)")
        }
        var threads: [LoopThread] = []
        for (i, loop) in loops.enumerated().dropFirst() {
            let handover = Handover(loop)
            let logger = self.logger
            do {
                threads.append(try LoopThread(name: "berth-loop-\(i)") {
                    do { try handover.value.run() } catch { logger.critical("loop \(i): \(error)") }
                })
            } catch {
                stop()
                for thread in threads { thread.join() }
                throw PublishError("\(error)")
            }
        }
        var failure: SyscallError?
        do { try loops[0].run() } catch { failure = error; stop() }
        for thread in threads { thread.join() }
        if let failure { throw PublishError("event loop: \(failure)") }
    }

    /// Stops every loop; from another thread use `stopper.stop()`.
    public func stop() { stopper.stop() }

    /// Counters of all loops, summed. Call after `run` returns.
    public var counters: RelayCounters { contexts.map(\.counters).reduce(RelayCounters(), +) }

    /// Per-rule counters of the kernel path: new connections/flows DNATed, and their first packets' bytes.
    public func kernelCounters() -> [DNATRule: (packets: UInt64, bytes: UInt64)] {
        (try? natTable?.counters()) ?? [:]
    }

    /// Removes the DNAT rules in one batch (the table goes), forgets the conntrack entries of UDP
    /// flows they created (or those flows would keep going to the container for minutes), and
    /// closes every listener. The loops must have stopped.
    public func close() {
        if let table = natTable {
            do { try table.delete() } catch { logger.error("\(error)") }
            natTable = nil
            for rule in kernelRules where rule.proto == .udp {
                _ = try? Conntrack.deleteUDPFlows(to: rule.containerIP, port: rule.containerPort)
            }
            kernelRules.removeAll()
        }
        listeners.removeAll()
        ports.removeAll()
    }

    deinit { close() }
}
