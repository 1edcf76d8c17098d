import Logging
import Mappings
import Netfilter

extension Publisher {
    /// Binds `mappings` in the mode asked for, or in the automatic one: hybrid with
    /// CAP_NET_ADMIN, userspace without (with a notice). When the automatic hybrid mode finds
    /// the kernel refusing berth's table, it says so and publishes in userspace only. A mode
    /// asked for is never swapped for another: without the capability it is an error. PROXY
    /// protocol headers come from the relay only, so they mean userspace mode.
    /// `notice` gets each line to tell the user; the ports bound are the publisher's `ports`.
    /// With `sockets` (systemd socket activation) the mappings are served through them, not bound.
    package static func start(
        _ mappings: [PortMapping],
        mode: Mode?,
        options: PublishOptions,
        logger: Logger,
        sockets: borrowing PassedSockets? = nil,
        notice: (String) -> Void
    ) throws(PublishError) -> Publisher {
        var options = options
        let automatic = mode == nil
        let proxyHeaders = options.relay.proxyProtocol != nil || options.relay.proxyProtocolUDP
        if proxyHeaders && mode != nil && mode != .userspace {
            // DNAT would hand the container connections without the header it was told to expect.
            throw PublishError("--proxy-protocol needs --mode userspace: the kernel path sends no PROXY header")
        }
        if proxyHeaders {
            options.mode = .userspace
        } else if let mode {
            if mode != .userspace && !Capability.hasNetAdmin() {
                throw PublishError(
                    "--mode \(mode) needs CAP_NET_ADMIN to program nftables (run as root, or use --mode userspace)"
                )
            }
            options.mode = mode
        } else {
            let (picked, text) = Mode.automatic()
            if let text { notice("notice: \(text)") }
            options.mode = picked
        }
        let publisher = Publisher(options: options, logger: logger)
        do {
            try publisher.bindOrAdopt(mappings, sockets)
            return publisher
        } catch  where error.isKernelPathFailure && automatic {
            notice("notice: no kernel fast path (\(error)): forwarding in userspace only")
        }
        publisher.close()
        options.mode = .userspace
        let fallback = Publisher(options: options, logger: logger)
        try fallback.bindOrAdopt(mappings, sockets)
        return fallback
    }

    private func bindOrAdopt(_ mappings: [PortMapping], _ sockets: borrowing PassedSockets?) throws(PublishError) {
        switch sockets {
        case .some(let passed): try adopt(mappings, sockets: passed)
        case .none: try bind(mappings)
        }
    }
}
