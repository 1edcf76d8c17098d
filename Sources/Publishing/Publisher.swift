// Publishing turns a set of port mappings into bound listeners and running event loops,
// and takes them down again. The CLI (standalone and docker-proxy modes) and bench/
// both drive this one type, so the CLI stays thin.

import Glibc
import LinuxIO
import Logging
import Mappings
import Netfilter
import Relay
import Synchronization
import SystemPackage

/// Something went wrong while publishing; the text is the one line a user sees.
public struct PublishError: Error, CustomStringConvertible, Sendable {
    public let description: String
    /// The kernel refused berth's nftables table: the userspace relay alone could still serve.
    public let isKernelPathFailure: Bool
    /// Why binding a host port failed (EADDRINUSE, EACCES), for callers that answer by kind.
    public let bindErrno: Errno?
    public init(_ description: String, isKernelPathFailure: Bool = false, bindErrno: Errno? = nil) {
        self.description = description
        self.isKernelPathFailure = isKernelPathFailure
        self.bindErrno = bindErrno
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
    /// Event loops (threads). Each loop has its own listener per mapping and host address
    /// (SO_REUSEPORT; the kernel spreads TCP clients and UDP flows over them). An adopted
    /// socket (`-use-listen-fd`) is one: every loop serves it if TCP, one loop if UDP.
    public var threads = 1
    /// Loops for bulk TCP connections (`RelayConfig.bulkAfter`), besides `threads`; 0: none, every
    /// connection stays on the loop that accepted it.
    public var bulkLoops = 0
    /// The bulk loops' threads run SCHED_BATCH at this nice value (0 to 19).
    public var bulkNice: Int32 = 10
    public var mode = Mode.userspace
    /// How long each loop polls before it sleeps (0: never polls). Cuts the wake-up latency of an
    /// idle CPU, at the cost of CPU time while traffic pauses.
    public var busyPoll: Duration = .zero
    /// berth's nftables table (`inet` family); nil: `berth_<pid>`, so several berths coexist.
    public var tableName: String?
    public init() {}
}

/// The ports of one `add` (or `bind`), removed together.
public struct PublicationID: Hashable, Sendable, CustomStringConvertible {
    public let raw: Int
    public var description: String { "\(raw)" }
}

/// Binds and runs. `bind`, `add`, `remove` and `close` come from one control thread at a time
/// (the caller's, or a daemon's control thread while `run` runs on another); the loops learn
/// of changes through messages (`LoopWaker.post`) and are never touched from another thread.
public final class Publisher {
    /// One host address of a mapping: a listener per loop, or one that the loops share. A
    /// dual-stack `::` socket passed by systemd serves two host addresses (`0.0.0.0` and `::`).
    fileprivate struct Binding: Sendable {
        let ports: [BoundPort]
        let listeners: [Listener]
        /// The relay's options for this port, its name in log lines among them.
        var options = MappingOptions()
        /// UDP: the flows of this host address over all loops (`--udp-max-flows`); nil: each relay
        /// its own.
        var udpBudget: UDPFlowBudget?
        var shared: Bool { listeners.count == 1 }
        init(port: BoundPort, listeners: [Listener]) { self.init(ports: [port], listeners: listeners) }
        init(ports: [BoundPort], listeners: [Listener]) {
            self.ports = ports
            self.listeners = listeners
        }
    }

    /// What the loops are, and what is published; shared by the control thread and `run`.
    private struct Live {
        var publications: [Int: [Binding]] = [:]
        /// Who asked for a publication (`add(_:owner:)`), for metrics' `owner` label.
        var owners: [Int: String] = [:]
        /// While `run` runs: one per loop.
        var shares: [LoopShare] = []
        var running = false
    }

    public let options: PublishOptions
    private let live = Mutex<Live>(Live())
    /// Held by the control calls and by a scrape's kernel counters; see `serialized`.
    private let controlLock = Mutex(())
    private var nextID = 0
    private var rulesByID: [Int: [DNATRule]] = [:]
    private let logger: Logger
    private var natTable: NatTable?
    /// The DNAT rules installed for `ports`.
    public private(set) var kernelRules: [DNATRule] = []
    /// Stops the loops from any thread, also before they start.
    public let stopper = Stopper()
    /// The loops' counters, summed when `run` returned.
    private var finalCounters = RelayCounters()

    public init(options: PublishOptions = PublishOptions(), logger: Logger = Logger(label: "berth")) {
        self.options = options
        self.logger = logger
    }

    // MARK: binding

    /// Every port published now, in the order added.
    public var ports: [BoundPort] {
        live.withLock { state in state.publications.sorted { $0.key < $1.key }.flatMap { $0.value.flatMap(\.ports) } }
    }

    /// Binds every mapping and, in kernel and hybrid mode, installs its DNAT rules in one
    /// batch before returning, so a reported port is served. All or nothing: on any failure
    /// what was bound is closed again and no rule is left.
    @discardableResult
    public func bind(_ mappings: [PortMapping]) throws(PublishError) -> [BoundPort] {
        try add(mappings).ports
    }

    /// `bind`, also while the loops run: the new listeners join every loop at its next wake-up.
    /// `owner` (a container, a client of the control API) labels the ports' metrics.
    /// `proxyProtocol` and `proxyProtocolUDP` ask these ports for PROXY protocol headers on top of
    /// what the options ask of every port; the relay alone sends them, so only in userspace mode.
    public func add(
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

    /// Runs one of the control calls. They come from one control thread at a time, but a
    /// scrape (`metrics`) may come from another: this keeps the kernel path's state and its
    /// netlink socket to one caller at a time.
    private func serialized<R: Sendable>(_ body: () throws(PublishError) -> R) throws(PublishError) -> R {
        try controlLock.withLock { _ throws(PublishError) -> R in try body() }
    }

    private func addSerialized(
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
        let id = nextID
        nextID += 1
        if options.mode != .userspace {
            rulesByID[id] = try installRules(for: newPorts)
        }
        publish(bound, id: id, owner: owner)
        return (PublicationID(raw: id), newPorts)
    }

    private func publish(_ asked: [Binding], id: Int, owner: String? = nil) {
        // Every port also gets what the options ask of all, and its name for the log lines.
        var completed = asked
        for i in completed.indices {
            let extra = completed[i].options
            completed[i].options = MappingOptions(
                proxyProtocol: extra.proxyProtocol ?? options.relay.proxyProtocol,
                proxyProtocolUDP: extra.proxyProtocolUDP || options.relay.proxyProtocolUDP,
                name: completed[i].ports.first.map(Self.logName)
            )
        }
        let bound = completed
        let mode = options.mode
        let logger = self.logger
        live.withLock { state in
            state.publications[id] = bound
            state.owners[id] = owner
            guard state.running else { return }
            for share in state.shares where !share.context.isBulk {
                share.context.loop.waker.post {
                    do {
                        try Self.serve(bound, id: id, on: share, mode: mode)
                    } catch {
                        logger.error(
                            "loop \(share.index): cannot serve \(bound.flatMap(\.ports).map(\.address)): \(error)"
                        )
                    }
                }
            }
        }
    }

    /// Stops serving the ports of `id` at once (their listeners leave every loop and close, so
    /// the ports are free), removes their DNAT rules and the conntrack entries of their UDP
    /// flows; open TCP connections get `drain` to finish, then are reset. UDP flows close.
    @discardableResult
    public func remove(_ id: PublicationID, drain: Duration = .seconds(10)) throws(PublishError) -> [BoundPort] {
        try serialized { () throws(PublishError) in try removeSerialized(id, drain: drain) }
    }

    private func removeSerialized(_ id: PublicationID, drain: Duration) throws(PublishError) -> [BoundPort] {
        // Only the ports leave the lock: the listeners must not outlive the loops' last accept
        // (`TCPAcceptor.stop(drain:)`), or clients queued meanwhile are reset when they close.
        let removed: [BoundPort]? = live.withLock { state in
            guard let bound = state.publications.removeValue(forKey: id.raw) else { return nil }
            state.owners[id.raw] = nil
            for share in state.shares {
                share.context.loop.waker.post {
                    for served in share.served.removeValue(forKey: id.raw) ?? [] {
                        switch served {
                        case .tcp(let acceptor): acceptor.stop(drain: drain)
                        case .udp(let relay): relay.stop()
                        }
                    }
                }
            }
            return bound.flatMap(\.ports)
        }
        guard let removed else { throw PublishError("no ports published as \(id)") }
        if let rules = rulesByID.removeValue(forKey: id.raw), let table = natTable {
            do { try table.remove(rules) } catch { throw PublishError("\(error)", isKernelPathFailure: true) }
            kernelRules.removeAll { rules.contains($0) }
            Self.forgetUDPFlows(of: rules)
        }
        return removed
    }

    private func installRules(for newPorts: [BoundPort]) throws(PublishError) -> [DNATRule] {
        if options.mode == .kernel, let port = newPorts.first(where: { !KernelPath.canServe($0) }) {
            throw PublishError(KernelPath.refusal(port))
        }
        let rules = newPorts.filter(KernelPath.canServe).map(KernelPath.rule(for:))
        if rules.isEmpty { return [] }
        do {
            if natTable == nil {
                natTable = try NatTable(name: options.tableName ?? NatTable.defaultName())
            }
            try natTable!.add(rules)
        } catch {
            throw PublishError("\(error)", isKernelPathFailure: true)
        }
        kernelRules += rules
        // UDP flows to the host port that began before its element: nat sees a flow's first packet
        // only, so a client that keeps sending would keep reaching the host, never the container.
        for rule in rules where rule.proto == .udp {
            _ = try? Conntrack.deleteUnNATedUDPFlows(toPort: rule.hostPort, v6: (rule.hostIP ?? rule.containerIP).isV6)
        }
        return rules
    }

    /// The conntrack entries of UDP flows through `rules` that are gone: DNATed ones would keep
    /// going to the old target, un-NATed ones to the host port (there since before the element,
    /// or through the relay) to whatever serves it next. Docker flushes by the container port
    /// only (moby#53384), portmap only at add.
    private static func forgetUDPFlows(of rules: [DNATRule]) {
        for rule in rules where rule.proto == .udp {
            _ = try? Conntrack.deleteUDPFlows(to: rule.containerIP, port: rule.containerPort)
            _ = try? Conntrack.deleteUnNATedUDPFlows(toPort: rule.hostPort, v6: (rule.hostIP ?? rule.containerIP).isV6)
        }
    }

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

    private func adoptSerialized(
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
        let id = nextID
        nextID += 1
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

    private func adoptSerialized(_ mappings: [PortMapping], sockets: [PassedSocket]) throws(PublishError) -> [BoundPort]
    {
        if options.mode == .kernel {
            // Its loops serve no listener: clients of the passed sockets would wait in their backlog.
            throw PublishError(
                "socket activation: --mode kernel serves no socket it is passed (use hybrid or userspace)"
            )
        }
        let plan = try ActivationPlan(mappings: mappings, sockets: sockets, hostAddresses: hostAddresses)
        let newPorts = plan.entries.flatMap(\.ports)
        let id = nextID
        nextID += 1
        if options.mode != .userspace {
            rulesByID[id] = try installRules(for: newPorts)
        }
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

    private func bindOne(_ mapping: PortMapping) throws(PublishError) -> [Binding] {
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
        throw Self.explain(lastError!, mapping)
    }

    /// A TCP or UDP listener on `address` for each loop, the first binding the port (the kernel's
    /// choice for port 0) and checking that nobody holds it, the others joining it.
    /// In kernel mode a port is only reserved, by one socket: DNAT serves it, loopback TCP
    /// clients are refused.
    private func listen(_ proto: Proto, _ address: SocketAddress) throws(SyscallError) -> [Listener] {
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

    private static func explain(_ error: SyscallError, _ mapping: PortMapping) -> PublishError {
        var text = "\(mapping.containerSide): \(error)"
        if case .anyOf(let range) = mapping.hostPort {
            text = "\(mapping.containerSide): no free host port in \(range): last tried \(error)"
        }
        if error.errno == .permissionDenied {
            text += " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        }
        return PublishError(text, bindErrno: error.errno)
    }

    // MARK: running

    /// Runs the loops until SIGINT/SIGTERM or `stop()`. Loop 0 runs on the calling thread.
    /// Signals are blocked here first so that only the signalfd sees them. When it returns,
    /// every loop has closed what it owned (listeners, connections, flows, pipes, its epoll),
    /// so the ports can be bound again; DNAT rules stay until `close()`. Runs once.
    /// With `onHangup`, SIGHUP is watched too and calls it on loop 0's thread (berth reopens its
    /// log file) instead of stopping.
    public func run(signals: [Int32] = [SIGINT, SIGTERM], onHangup: (() -> Void)? = nil) throws(PublishError) {
        let signals = signals + (onHangup == nil ? [] : [SIGHUP])
        if !signals.isEmpty { EventLoop.blockSignals(signals) }
        let loopCount = max(1, options.threads)
        let bulkCount = options.mode == .kernel || options.relay.bulkAfter <= 0 ? 0 : max(0, options.bulkLoops)
        var loops: [EventLoop] = []
        var shares: [LoopShare] = []
        defer {
            for loop in loops { loop.closeAll() }
            finalCounters = shares.map(\.context.counters).reduce(RelayCounters(), +)
            // The loops closed every listener they served: nothing is published any more.
            live.withLock { state in
                state.running = false
                state.shares.removeAll()
                state.publications.removeAll()
                state.owners.removeAll()
            }
            stopper.forgetLoops()
        }
        do {
            for index in 0..<loopCount {
                let loop = try EventLoop()
                loops.append(loop)
                loop.busyPoll = options.busyPoll.nanosecondsClamped
                let context = RelayContext(loop: loop, config: options.relay, logger: logger)
                shares.append(LoopShare(index: index, loopCount: loopCount, context: context))
                stopper.add(loop.waker)
            }
            var bulkContexts: [RelayContext] = []
            for index in 0..<bulkCount {
                let loop = try EventLoop()
                loops.append(loop)
                let context = RelayContext(loop: loop, config: options.relay, logger: logger, bulk: true)
                bulkContexts.append(context)
                shares.append(LoopShare(index: loopCount + index, loopCount: loopCount, context: context))
                stopper.add(loop.waker)
            }
            for share in shares where !share.context.isBulk { share.context.bulkLoops = bulkContexts }
            // From here on an `add` posts to the loops; what was published before is served now,
            // on this thread, before any loop runs.
            let published = live.withLock { state in
                state.shares = shares
                state.running = true
                return state.publications
            }
            for share in shares where !share.context.isBulk {
                for (id, bound) in published.sorted(by: { $0.key < $1.key }) {
                    try Self.serve(bound, id: id, on: share, mode: options.mode)
                }
            }
            if !signals.isEmpty {
                let stopper = self.stopper
                let logger = self.logger
                try loops[0].watchSignals(signals) { signal in
                    if signal == SIGHUP, let onHangup {
                        onHangup()
                        return
                    }
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
            let bulk = i >= loopCount
            let nice = options.bulkNice
            do {
                threads.append(
                    try LoopThread(name: bulk ? "berth-bulk-\(i - loopCount)" : "berth-loop-\(i)") {
                        if bulk {
                            // Bulk gives way: woken interactive loops and other processes run first.
                            do { try lowerThreadPriority(batch: true, nice: nice) } catch {
                                logger.warning("bulk loop \(i - loopCount): \(error)")
                            }
                        }
                        do { try handover.value.run() } catch { logger.critical("loop \(i): \(error)") }
                    }
                )
            } catch {
                stop()
                for thread in threads { thread.join() }
                throw PublishError("\(error)")
            }
        }
        var failure: SyscallError?
        do { try loops[0].run() } catch {
            failure = error
            stop()
        }
        for thread in threads { thread.join() }
        if let failure { throw PublishError("event loop: \(failure)") }
    }

    /// How log lines name a port: its mapping as `-p` would spell it, with the host address and port
    /// it got (`127.0.0.1:49153:172.17.0.2:80/tcp`), as the docker-proxy mode names its one.
    static func logName(_ port: BoundPort) -> String {
        var mapping = port.mapping
        if let ip = IPAddress(bytes: port.address.ipBytes) { mapping.hostIP = ip }
        mapping.hostPort = .fixed(port.address.port)
        return mapping.description
    }

    /// Starts serving `bound` on one loop, on that loop's thread (or before it runs). Each loop
    /// serves its own listener of a port; a shared one (adopted) is TCP for every loop, UDP for
    /// one, picked round-robin.
    private static func serve(_ bound: [Binding], id: Int, on share: LoopShare, mode: Mode) throws(SyscallError) {
        guard mode != .kernel else { return }
        var sharedUDP = id
        for binding in bound {
            let listener = binding.listeners[binding.shared ? 0 : share.index]
            let target = binding.ports[0].target
            if listener.isTCP {
                let shared = binding.shared && share.loopCount > 1
                let acceptor = TCPAcceptor(
                    listener: listener,
                    target: target,
                    context: share.context,
                    shared: shared,
                    options: binding.options
                )
                try acceptor.start()
                share.served[id, default: []].append(.tcp(acceptor))
            } else {
                if binding.shared {
                    defer { sharedUDP += 1 }
                    guard sharedUDP % share.loopCount == share.index else { continue }
                }
                let relay = UDPRelay(
                    listener: listener,
                    target: target,
                    context: share.context,
                    options: binding.options,
                    budget: binding.udpBudget
                )
                try relay.start()
                share.served[id, default: []].append(.udp(relay))
            }
        }
    }

    /// Stops every loop; from another thread use `stopper.stop()`.
    public func stop() { stopper.stop() }

    /// Counters of all loops, summed. Call after `run` returns.
    public var counters: RelayCounters { finalCounters }

    /// Per-rule counters of the kernel path: new connections/flows DNATed, and their first packets' bytes.
    public func kernelCounters() -> [DNATRule: (packets: UInt64, bytes: UInt64)] {
        controlLock.withLock { _ in (try? natTable?.counters()) ?? [:] }
    }

    // MARK: metrics

    /// A scrape: every loop copies its per-mapping counters on its own thread (work posted
    /// through its eventfd, after what was posted before, so a removed publication is gone),
    /// the answers are summed per mapping; with the process's descriptors and pooled pipes and,
    /// in kernel and hybrid mode, the DNAT map elements' counters. A loop that has not answered
    /// within `timeout` is left out (`loopsAnswered` says so): a stuck loop cannot hang a scrape.
    /// From the control thread, like `add` and `remove` (the kernel counters use their netlink
    /// socket); the loops go on meanwhile. Allocates: never on a loop's thread.
    public func metrics(timeout: Duration = .seconds(1)) -> PublisherMetrics {
        let answers = LoopAnswers()
        let (loopCount, owners): (Int, [Int: String]) = live.withLock { state in
            guard state.running else { return (0, state.owners) }
            for share in state.shares {
                share.context.loop.waker.post {
                    answers.add(Self.sample(share))
                }
            }
            return (state.shares.count, state.owners)
        }
        let deadline = Semaphore.deadline(after: timeout)
        var answered = 0
        while answered < loopCount && answers.semaphore.wait(until: deadline) { answered += 1 }
        var result = PublisherMetrics()
        result.loops = loopCount
        var byKey: [MappingKey: Int] = [:]
        var byCounters: [ObjectIdentifier: Int] = [:]
        let samples = answers.take()
        for sample in samples {
            result.loopsAnswered += 1
            result.pipesPooled += sample.idlePipes
            for (m, countersID) in zip(sample.mappings, sample.countersIDs) {
                let key = MappingKey(publication: m.publication, proto: m.proto, host: m.host)
                if let i = byKey[key] {
                    result.mappings[i].counters += m.counters
                } else {
                    byKey[key] = result.mappings.count
                    var m = m
                    m.owner = owners[m.publication.raw]
                    result.mappings.append(m)
                }
                if let countersID { byCounters[countersID] = byKey[key] }
            }
        }
        // What connections counted on a bulk loop belongs to the mapping that accepted them.
        for sample in samples {
            for (countersID, counters) in sample.movedIn {
                if let i = byCounters[countersID] { result.mappings[i].counters += counters }
            }
        }
        result.mappings.sort {
            ($0.publication.raw, $0.host.port, $0.host.isV6 ? 1 : 0) < (
                $1.publication.raw, $1.host.port, $1.host.isV6 ? 1 : 0
            )
        }
        result.openDescriptors = try? Resources.openDescriptorCount()
        result.descriptorLimit = (try? Limits.openFiles())?.soft
        result.kernel = controlLock.withLock { _ in kernelMetrics(owners: owners) }
        return result
    }

    /// The DNAT map elements' counters, with their owners; under `controlLock`.
    private func kernelMetrics(owners: [Int: String]) -> [PublisherMetrics.KernelRule] {
        guard let table = natTable else { return [] }
        var ownerOfRule: [DNATRule: String] = [:]
        for (id, rules) in rulesByID {
            guard let owner = owners[id] else { continue }
            for rule in rules { ownerOfRule[rule] = owner }
        }
        return ((try? table.counters()) ?? [:]).map { rule, counters in
            PublisherMetrics.KernelRule(
                rule: rule,
                owner: ownerOfRule[rule],
                packets: counters.packets,
                bytes: counters.bytes
            )
        }
        .sorted { ($0.rule.hostPort, $0.rule.proto.rawValue) < ($1.rule.hostPort, $1.rule.proto.rawValue) }
    }

    /// One loop's counters, copied on its thread.
    private static func sample(_ share: LoopShare) -> LoopSample {
        var mappings: [PublisherMetrics.Mapping] = []
        var countersIDs: [ObjectIdentifier?] = []
        for (id, served) in share.served {
            for handler in served {
                switch handler {
                case .tcp(let acceptor):
                    mappings.append(
                        PublisherMetrics.Mapping(
                            publication: PublicationID(raw: id),
                            proto: .tcp,
                            host: acceptor.listener.address,
                            target: acceptor.target,
                            counters: acceptor.counters
                        )
                    )
                    countersIDs.append(acceptor.countersID)
                case .udp(let relay):
                    mappings.append(
                        PublisherMetrics.Mapping(
                            publication: PublicationID(raw: id),
                            proto: .udp,
                            host: relay.listener.address,
                            target: relay.target,
                            counters: relay.counters
                        )
                    )
                    countersIDs.append(nil)
                }
            }
        }
        return LoopSample(
            mappings: mappings,
            countersIDs: countersIDs,
            movedIn: share.context.movedInCounters(),
            idlePipes: share.context.idlePipes
        )
    }

    /// Removes the DNAT rules in one batch (the table goes), forgets the conntrack entries of UDP
    /// flows they created (or those flows would keep going to the container for minutes), and
    /// closes every listener. The loops must have stopped.
    public func close() {
        controlLock.withLock { _ in closeSerialized() }
    }

    private func closeSerialized() {
        if let table = natTable {
            do { try table.delete() } catch { logger.error("\(error)") }
            natTable = nil
            Self.forgetUDPFlows(of: kernelRules)
            kernelRules.removeAll()
        }
        live.withLock { state in
            state.publications.removeAll()
            state.owners.removeAll()
        }
        rulesByID.removeAll()
    }

    deinit { close() }
}

/// What one loop serves, by publication. Made before the loop runs, then touched only on the
/// loop's thread (posted work), so it needs no lock.
private final class LoopShare: @unchecked Sendable {
    enum Served {
        case tcp(TCPAcceptor)
        case udp(UDPRelay)
    }

    let index: Int
    let loopCount: Int
    let context: RelayContext
    var served: [Int: [Served]] = [:]

    init(index: Int, loopCount: Int, context: RelayContext) {
        self.index = index
        self.loopCount = loopCount
        self.context = context
    }
}

private struct MappingKey: Hashable {
    let publication: PublicationID
    let proto: Proto
    let host: SocketAddress
}

private struct LoopSample: Sendable {
    var mappings: [PublisherMetrics.Mapping]
    /// Each TCP mapping's `TCPAcceptor.countersID`, in step with `mappings`.
    var countersIDs: [ObjectIdentifier?]
    /// A bulk loop's: what moved connections counted there, by their mapping's `countersID`.
    var movedIn: [(countersID: ObjectIdentifier, counters: MappingCounters)]
    var idlePipes: Int
}

/// The loops' answers to one scrape. Kept alive by the posted work, so a loop that answers
/// after the scrape gave up writes into it harmlessly.
private final class LoopAnswers: Sendable {
    let semaphore = Semaphore()
    private let samples = Mutex<[LoopSample]>([])

    func add(_ sample: LoopSample) {
        samples.withLock { $0.append(sample) }
        semaphore.signal()
    }

    func take() -> [LoopSample] {
        samples.withLock { samples in
            defer { samples.removeAll() }
            return samples
        }
    }
}
