import LinuxIO

/// What the process may do with netfilter.
package enum Capability {
    /// Whether CAP_NET_ADMIN (bit 12) is in the effective set, read from `CapEff` in
    /// /proc/self/status. It is relative to the current user namespace: inside `unshare -rn` it is
    /// set, and it lets the process program that namespace's nftables, not the host's.
    package static func hasNetAdmin() -> Bool {
        guard let status = FileSystem.readSmallFile("/proc/self/status") else { return false }
        for line in status.split(separator: "\n") where line.hasPrefix("CapEff:") {
            let hex = line.dropFirst("CapEff:".count).trimmingPrefix { $0 == " " || $0 == "\t" }
            guard let mask = UInt64(hex, radix: 16) else { return false }
            return mask & (1 << 12) != 0
        }
        return false
    }
}
