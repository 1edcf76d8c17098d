// How many descriptors a set of mappings needs, checked against RLIMIT_NOFILE before anything is
// bound: `-p 9278-47650` (76,746 listeners) used to bind the first 20,000, six seconds' work, and then
// fail on EMFILE. Now it is refused at once, in one line, and nothing is bound. What is open already
// counts too, so a daemon's adds, one after another, cannot creep up to EMFILE either.

import LinuxIO
import Mappings

/// The descriptors that binding a set of mappings takes: its listening sockets plus a reserve for
/// berth itself.
package struct DescriptorBudget: Sendable, Equatable {
    /// One per host address per event loop: every loop owns its own SO_REUSEPORT listener for each
    /// mapping, and an all-address mapping binds `0.0.0.0` and `::` (one address in kernel mode, as
    /// `Publisher.hostAddresses` decides).
    package let listeners: Int
    /// `listeners` plus the reserve.
    package let descriptors: Int

    /// What berth holds besides listeners: standard streams, the netlink socket, /proc reads.
    package static let reserve = 16
    /// What each loop holds of its own: epoll, its eventfd, its timer.
    package static let reservePerLoop = 3

    package init(_ mappings: [PortMapping], options: PublishOptions) {
        let loops = max(1, options.threads)
        var addresses = 0
        for mapping in mappings {
            addresses += mapping.hostIP != nil || options.mode == .kernel ? 1 : 2
        }
        listeners = addresses * loops
        descriptors = listeners + Self.reserve + Self.reservePerLoop * loops
    }

    /// The refusal when the budget, beside the `open` descriptors berth holds already (listeners
    /// of earlier adds, connections), is over `limit` (the soft RLIMIT_NOFILE); nil when it fits.
    /// What a fresh process holds (standard streams and the like) is in `reserve` already: only
    /// what is open beyond it counts again.
    package func refusal(limit: UInt64, open: Int = 0) -> PublishError? {
        let already = max(0, open - Self.reserve)
        guard UInt64(descriptors) + UInt64(already) > limit else { return nil }
        let noun = listeners == 1 ? "listening socket needs" : "listening sockets need"
        let beside = already > 0 ? " beside the \(open) open" : ""
        return PublishError(
            "\(listeners) \(noun) \(descriptors) file descriptors\(beside), the limit is \(limit) (ulimit -n)"
        )
    }

    /// Raises the soft limit on open files to the hard limit, then refuses mappings that need more
    /// descriptors than that. Publisher.bind calls it before it binds anything.
    package static func check(_ mappings: [PortMapping], options: PublishOptions) throws(PublishError) {
        let limit: ResourceLimit
        do {
            limit = try Limits.raiseOpenFiles()
        } catch {
            throw PublishError("\(error)")
        }
        // What is open counts: a daemon's earlier adds and its connections hold descriptors too.
        let open = (try? Resources.openDescriptorCount()) ?? 0
        if let refusal = DescriptorBudget(mappings, options: options).refusal(limit: limit.soft, open: open) {
            throw refusal
        }
    }
}
