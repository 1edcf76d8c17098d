// Theory of operation: one UDP listener, served by exactly one loop, and one flow per
// client address (IP and port). A flow is a connected, non-blocking UDP socket towards the
// backend, registered in the loop, so the kernel demultiplexes the replies and the client
// keeps one backend source port for the flow's life. Replies go back through the listener
// to exactly that client.
//
// Up (client → backend): recvmmsg reads up to 32 datagrams from the listener into the
// loop's `DatagramBatch`; each one finds (or opens) its flow, marks it active, and is
// queued; consecutive datagrams of one flow go out in one sendmmsg on its socket, or, several
// of one size, in one segmented send (UDP GSO: `DatagramBatch.sendSegmented`). Down
// (backend → client): the flow socket is read the same way, and its datagrams go out in one
// sendmmsg on the listener, addressed to the client and, on a wildcard listener, from the
// local address the client last sent to (an IP_PKTINFO / IPV6_PKTINFO control message).
// Datagrams are sent from the buffers they were received into: no copy, no allocation.
//
// Activity in either direction keeps a flow alive, so one-way streams do too. How long a
// flow lives idle depends on what it has seen, as conntrack's UDP entries do (`UDPFlowTable`):
// 30 s unassured (no reply, or one exchange: a DNS query), 120 s once assured (traffic both
// ways, going on). One timer per lifetime stands at the deadline of its least recently active
// flow; when it fires, the flows due close and the timer moves on. Each lifetime's deadlines
// only move later, so neither timer is ever replaced by an earlier one and none is left behind
// in the loop's heap (one timer for both would be, each time the short list refilled).
// The flows are bounded per listener address over all its loops (`UDPFlowBudget`: a reserve
// per loop, a pool shared): a new client when the pool is spent evicts the flow of its own loop
// that `UDPFlowTable.oldest` names (answered ones first, then waiting ones) and takes its place.
// Answered flows (an exchange that is over: a DNS query and its answer) are also bounded on
// their own (`--udp-max-answered`, split over the loops): once a reply makes one too many, the
// oldest answered flow closes, so one-shot load holds a fraction of the cap's descriptors.
//
// A backend that is down answers with ICMP port unreachable, which the connected flow
// socket reports once as ECONNREFUSED on its next send or receive. That is counted, never
// fatal: the flow stays, and later datagrams are tried again. A send that fails that way has
// not gone (the error was left by an earlier datagram), so it is retried once at once.
// The client only ever hears from the backend: the listener never reports errors to it.
//
// Sockets: the relay owns every flow's descriptor (`backends`, by slot) and closes it when
// the flow ends or the relay stops; the loop stopping stops the relay. Level-triggered registration with a
// bounded number of batches per wake-up keeps one busy flow or port from starving the rest.

import Glibc
import LinuxIO
import Logging
import SystemPackage

/// Relays one UDP listener to one target on one loop. With several loops each has its own
/// listener on the port (SO_REUSEPORT): the kernel sends a client's datagrams to the same
/// socket every time (a hash of the addresses), so its flow lives on one loop.
public final class UDPRelay: EventHandler {
    /// A flow socket's receive buffer. It queues one backend's replies to one client: 1 MiB
    /// (charged as 2) holds a burst of about 30 maximum-size datagrams or 2,000 small ones
    /// while the loop is busy. It is a limit, not an allocation: memory is used only while
    /// datagrams wait.
    package static let flowReceiveBuffer = 1 << 20
    /// recvmmsg calls per wake-up of the listener (32 datagrams each), and of a flow socket.
    private static let listenerBatchesPerWake = 8
    private static let flowBatchesPerWake = 4

    package let listener: Listener
    package let target: SocketAddress
    let context: RelayContext
    private let flows: UDPFlowTable
    /// The listener's own address as a flow key's raw words, for PROXY headers.
    private let listenerKey: FlowKey
    /// Per slot, valid while the slot holds a flow: its backend socket (owned), its
    /// registration, and the local address its client last sent to.
    private let backends: DescriptorSlots
    private let flowIDs: UnsafeMutablePointer<HandlerID>
    private let sources: UnsafeMutablePointer<PacketInfo?>
    /// Per slot, made the first time the slot is used and kept: a flow costs no allocation.
    private var handlers: [FlowHandler] = []
    private var id: HandlerID?
    /// The expiry timer pending for unassured flows (tag 0) and for assured ones (tag 1), if any.
    private var expiryArmedAt: (unassured: Instant?, assured: Instant?)
    /// The mapping's flows over all loops.
    package let budget: UDPFlowBudget
    /// Datagrams to the backend this size or larger are not segmented (UDP GSO): a segmented
    /// send of them was refused (over the path's MTU, or no GSO on the path at all).
    private var segmentLimit = Int.max
    /// Out of descriptors since the last flow opened: log only the first failure.
    private var exhausted = false
    /// This mapping's counters on this loop.
    let mapping: MappingCounterBox
    /// A copy of them; on the loop's thread.
    package var counters: MappingCounters { mapping.value }

    /// `options` nil: the loop's PROXY protocol setting, no mapping name in the log lines.
    /// `budget` nil: this relay alone, `udpMaxFlows` flows; the loops serving one mapping share one.
    public init(
        listener: Listener,
        target: SocketAddress,
        context: RelayContext,
        options: MappingOptions? = nil,
        budget: UDPFlowBudget? = nil
    ) {
        precondition(!listener.isTCP, "UDPRelay needs a UDP listener")
        mapping = context.counterBox(
            options: options ?? MappingOptions(proxyProtocolUDP: context.config.proxyProtocolUDP),
            logger: context.logger
        )
        self.listener = listener
        self.target = target
        self.context = context
        let budget = budget ?? UDPFlowBudget(limit: context.config.udpMaxFlows)
        self.budget = budget
        let capacity = budget.perLoop
        flows = UDPFlowTable(
            capacity: capacity,
            lifetimes: context.config.udpLifetimes,
            answeredLimit: budget.answeredPerLoop(context.config.udpMaxAnswered)
        )
        listenerKey = FlowKey(listener.address)
        backends = DescriptorSlots(capacity: capacity)
        flowIDs = .allocate(capacity: capacity)
        sources = .allocate(capacity: capacity)
    }

    deinit {
        flowIDs.deallocate()
        sources.deallocate()
    }

    public func start() throws(SyscallError) {
        let id = context.loop.attach(self)
        self.id = id
        try context.loop.add(listener.descriptor, .read, for: id, tag: 0)
    }

    /// Stops reading the listener and closes every flow. Call on the loop's thread, or after it ended.
    public func stop() {
        guard let id else { return }
        context.loop.remove(listener.descriptor)
        context.loop.detach(id)
        self.id = nil
        expiryArmedAt = (nil, nil)
        while let slot = flows.oldest { closeFlow(slot) }
    }

    package func teardown(loop: EventLoop) { stop() }

    /// Flows open now.
    package var flowCount: Int { flows.count }

    // MARK: client → backend

    package func ready(_ readiness: Readiness, tag: UInt8, loop: EventLoop) {
        let batch = context.datagrams
        for _ in 0..<Self.listenerBatchesPerWake {
            let count: Int
            do {
                switch try batch.receive(from: listener.descriptor) {
                case .done(let n): count = n
                case .wouldBlock: return
                }
            } catch {
                // Not expected on an unconnected socket (ENOMEM); level-triggered, so we come back.
                mapping.pointer.pointee.dropped &+= 1
                mapping.logger.debug("\(listener.address): \(error)")
                return
            }
            forwardToBackends(batch, count: count, now: loop.now)
            if count < batch.capacity { return }
        }
    }

    private func forwardToBackends(_ batch: DatagramBatch, count: Int, now: Instant) {
        batch.clearQueue()
        var runSlot = -1
        var runStart = 0
        for i in 0..<count {
            if batch.isTruncated(i) {
                mapping.pointer.pointee.truncated &+= 1
                continue
            }
            let key = FlowKey(sockaddr: batch.source(i))
            let slot: Int
            if runSlot >= 0 && flows.key(at: runSlot) == key {
                slot = runSlot
            } else if let found = flows.lookup(key) {
                slot = found
            } else {
                // Send what is queued first: making room may evict the flow it is for.
                flush(batch, slot: runSlot, from: runStart)
                runSlot = -1
                guard let opened = openFlow(key, now: now) else {
                    mapping.pointer.pointee.dropped &+= 1
                    continue
                }
                slot = opened
            }
            if flows.touch(slot, now: now) { assured() }
            let destination = batch.destination(i)
            sources[slot] = destination
            if slot != runSlot {
                flush(batch, slot: runSlot, from: runStart)
                runSlot = slot
                runStart = batch.queued
            }
            if mapping.options.proxyProtocolUDP {
                // The address the client sent to: from its pktinfo on a wildcard listener.
                let local =
                    destination.map { (high: $0.high, low: $0.low) } ?? (high: listenerKey.high, low: listenerKey.low)
                batch.queue(i) { room in
                    ProxyHeader.writeDatagram(
                        source: key,
                        destinationHigh: local.high,
                        destinationLow: local.low,
                        destinationPort: listener.address.port,
                        into: room
                    )
                }
            } else {
                batch.queue(i)
            }
        }
        flush(batch, slot: runSlot, from: runStart)
    }

    @inline(__always)
    private func flush(_ batch: DatagramBatch, slot: Int, from start: Int) {
        guard slot >= 0, batch.queued > start else { return }
        backends.with(slot) { send(batch, start..<batch.queued, on: $0, toBackend: true) }
    }

    // MARK: backend → client

    fileprivate func backendReady(slot: Int) {
        backends.with(slot) { backendReady(slot: slot, $0) }
        // After the replies went out: the flow closed may be this one.
        while let answered = flows.overAnswered {
            closeFlow(answered)
            mapping.pointer.pointee.answeredEvicted &+= 1
        }
    }

    private func backendReady(slot: Int, _ fd: borrowing Descriptor) {
        let batch = context.datagrams
        for _ in 0..<Self.flowBatchesPerWake {
            let count: Int
            do {
                switch try batch.receive(from: fd) {
                case .done(let n): count = n
                case .wouldBlock: return
                }
            } catch {
                if Self.isBackendError(error.errno) {
                    // An earlier datagram met a closed port; reading cleared the error.
                    mapping.pointer.pointee.backendErrors &+= 1
                    continue
                }
                mapping.pointer.pointee.dropped &+= 1
                mapping.logger.debug("\(listener.address) flow \(flows.key(at: slot)): \(error)")
                return
            }
            if flows.touch(slot, now: context.loop.now, reply: true, datagrams: count) { assured() }
            batch.clearQueue()
            for i in 0..<count {
                if batch.isTruncated(i) {
                    mapping.pointer.pointee.truncated &+= 1
                } else {
                    batch.queue(i)
                }
            }
            if batch.queued > 0 {
                let source = sources[slot]
                flows.key(at: slot).withSockAddr { peer, length in
                    send(
                        batch,
                        0..<batch.queued,
                        on: listener.descriptor,
                        toBackend: false,
                        to: peer,
                        length: length,
                        from: source
                    )
                }
            }
            if count < batch.capacity { return }
        }
    }

    // MARK: sending

    /// Sends the queued datagrams in `range`, counting what went and what was dropped.
    private func send(
        _ batch: DatagramBatch,
        _ range: Range<Int>,
        on fd: borrowing Descriptor,
        toBackend: Bool,
        to peer: UnsafeRawPointer? = nil,
        length: socklen_t = 0,
        from source: PacketInfo? = nil
    ) {
        var next = range.lowerBound
        var retried = false
        while next < range.upperBound {
            // Several of one size to the backend: one segmented send (UDP GSO), a pass down the
            // stack for all of them instead of one each. Not to clients: those sends carry an
            // address and a pktinfo, and one reply batch rarely holds several of one size.
            let run =
                peer == nil && source == nil && range.upperBound - next >= 2
                ? batch.segmentable(next..<range.upperBound, below: segmentLimit) : 0
            do {
                let result =
                    run >= 2
                    ? try batch.sendSegmented(fd, queued: next..<(next + run))
                    : try batch.send(fd, queued: next..<range.upperBound, to: peer, length: length, from: source)
                switch result {
                case .done(let sent):
                    if run >= 2 { mapping.pointer.pointee.segmentedSends &+= 1 }
                    var bytes = 0
                    for k in next..<(next + sent) { bytes += batch.queuedLength(k) }
                    if toBackend {
                        mapping.pointer.pointee.datagramsToBackend &+= UInt64(sent)
                        mapping.pointer.pointee.bytesToBackend &+= UInt64(bytes)
                    } else {
                        mapping.pointer.pointee.datagramsToClient &+= UInt64(sent)
                        mapping.pointer.pointee.bytesToClient &+= UInt64(bytes)
                    }
                    next += sent
                    retried = false
                case .wouldBlock:
                    // The send buffer is full: UDP drops rather than waits.
                    mapping.pointer.pointee.dropped &+= UInt64(range.upperBound - next)
                    return
                }
            } catch {
                if run >= 2
                    && (error.errno == .messageTooLong || error.errno == .invalidArgument || error.errno == .ioError)
                {
                    // This path cannot segment datagrams of this size (EMSGSIZE: over its MTU, which
                    // one by one they may pass fragmented; EINVAL, EIO: no GSO): one by one from now on.
                    segmentLimit = min(segmentLimit, batch.queuedTotal(next))
                    mapping.logger.debug("\(listener.address): no UDP segmentation to \(target): \(error)")
                    continue
                }
                if Self.isBackendError(error.errno) {
                    mapping.pointer.pointee.backendErrors &+= 1
                    // The error was left by an earlier datagram and is cleared now; this one has not gone.
                    if !retried {
                        retried = true
                        continue
                    }
                }
                // EMSGSIZE (65,527 bytes into IPv4), EPERM (a firewall), ...: drop this one, go on.
                mapping.pointer.pointee.dropped &+= 1
                next += 1
                retried = false
            }
        }
    }

    /// Errors a connected UDP socket reports for ICMP errors from the backend's side.
    private static func isBackendError(_ errno: Errno) -> Bool {
        switch errno {
        case .connectionRefused, .noRouteToHost, .networkUnreachable, .hostIsDown: return true
        default: return false
        }
    }

    // MARK: flows

    /// Opens a flow for a new client; nil when no socket can be had (the datagram is dropped).
    private func openFlow(_ key: FlowKey, now: Instant) -> Int? {
        // Beyond this loop's reserve a flow takes a unit of the shared pool (given back when a
        // flow beyond the reserve ends), so the loop holds max(0, flows - reserve) of them.
        let pooled = flows.count >= budget.reserve
        if flows.isFull || (pooled && !budget.take()) {
            // Full. Before the new socket: the evicted flow's descriptor is the one the new flow
            // may need, and its place in the budget passes to the new flow.
            guard let victim = flows.oldest else { return nil }
            closeFlow(victim, keepingBudget: true)
            mapping.pointer.pointee.flowsEvicted &+= 1
        }
        var opened = false
        // Its place goes back if it does not open: the loop holds one flow fewer than counted.
        defer { if !opened && flows.count >= budget.reserve { budget.give() } }
        let socket: Descriptor
        do {
            socket = try Socket.make(family: target.family, type: Int32(SOCK_DGRAM.rawValue))
        } catch {
            if !exhausted {
                exhausted = true
                mapping.logger.warning("\(listener.address): no socket for a new UDP flow: \(error)")
            }
            return nil
        }
        Socket.setReceiveBuffer(socket, bytes: Self.flowReceiveBuffer)
        do {
            _ = try Socket.connect(socket, target)
        } catch {
            mapping.pointer.pointee.backendErrors &+= 1
            mapping.logger.debug("connect \(target): \(error)")
            return nil
        }
        if exhausted {
            exhausted = false
            mapping.logger.notice("\(listener.address): opening UDP flows again")
        }
        let slot = flows.insert(key, now: now).slot
        guard backends.put(socket, at: slot) else {
            // The table gave out a slot whose socket is still open: drop this datagram, keep berth.
            mapping.logger.error("\(listener.address): UDP flow slot \(slot) is still in use; datagram dropped")
            flows.remove(slot)
            return nil
        }
        let id = context.loop.attach(handler(for: slot))
        flowIDs[slot] = id
        do {
            try backends.with(slot) { (fd) throws(SyscallError) in try context.loop.add(fd, .read, for: id, tag: 0) }
        } catch {
            mapping.logger.error("\(listener.address): cannot watch a UDP flow socket: \(error)")
            context.loop.detach(id)
            backends.take(slot)?.close()
            flows.remove(slot)
            return nil
        }
        mapping.pointer.pointee.flowsCreated &+= 1
        mapping.pointer.pointee.flowsActive += 1
        opened = true
        armExpiry()
        return slot
    }

    private func handler(for slot: Int) -> FlowHandler {
        while handlers.count <= slot { handlers.append(FlowHandler(relay: self, slot: handlers.count)) }
        return handlers[slot]
    }

    /// `keepingBudget`: the flow's place in the budget goes to the flow replacing it.
    private func closeFlow(_ slot: Int, keepingBudget: Bool = false) {
        if !keepingBudget && flows.count > budget.reserve { budget.give() }
        context.loop.detach(flowIDs[slot])
        // Closing takes it out of epoll too: nobody else holds this socket.
        backends.take(slot)?.close()
        flows.remove(slot)
        mapping.pointer.pointee.flowsActive -= 1
    }

    // MARK: expiry

    /// Waits for each lifetime's next deadline, unless a timer at or before it is pending already.
    private func armExpiry() {
        guard let id else { return }
        if let deadline = flows.nextExpiry(assured: false),
            expiryArmedAt.unassured.map({ deadline < $0 }) ?? true
        {
            expiryArmedAt.unassured = deadline
            context.loop.schedule(at: deadline, for: id, tag: 0)
        }
        if let deadline = flows.nextExpiry(assured: true), expiryArmedAt.assured.map({ deadline < $0 }) ?? true {
            expiryArmedAt.assured = deadline
            context.loop.schedule(at: deadline, for: id, tag: 1)
        }
    }

    /// A flow just became assured: it waits out the long timeout from now.
    private func assured() {
        mapping.pointer.pointee.flowsAssured &+= 1
        armExpiry()
    }

    package func timer(tag: UInt8, loop: EventLoop) {
        if tag == 0, let pending = expiryArmedAt.unassured, pending <= loop.now { expiryArmedAt.unassured = nil }
        if tag == 1, let pending = expiryArmedAt.assured, pending <= loop.now { expiryArmedAt.assured = nil }
        while let slot = flows.expired(now: loop.now) {
            closeFlow(slot)
            mapping.pointer.pointee.flowsExpired &+= 1
        }
        armExpiry()
    }
}

/// A flow socket's handler: tells the relay which flow woke.
private final class FlowHandler: EventHandler {
    unowned let relay: UDPRelay
    let slot: Int

    init(relay: UDPRelay, slot: Int) {
        self.relay = relay
        self.slot = slot
    }

    func ready(_ readiness: Readiness, tag: UInt8, loop: EventLoop) { relay.backendReady(slot: slot) }
}
