#if canImport(Glibc)
import Glibc
#endif

/// What the process may do with netfilter.
public enum Capability {
    /// Whether CAP_NET_ADMIN (bit 12) is in the effective set, read from `CapEff` in
    /// /proc/self/status. It is relative to the current user namespace: inside `unshare -rn` it is
    /// set, and it lets the process program that namespace's nftables, not the host's.
    public static func hasNetAdmin() -> Bool {
        guard let status = readStatus() else { return false }
        for line in status.split(separator: "\n") where line.hasPrefix("CapEff:") {
            let hex = line.dropFirst("CapEff:".count).trimmingPrefix { $0 == " " || $0 == "\t" }
            guard let mask = UInt64(hex, radix: 16) else { return false }
            return mask & (1 << 12) != 0
        }
        return false
    }

    private static func readStatus() -> String? {
        let fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let got = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if got < 0 && errno == EINTR { continue }
            if got <= 0 { break }
            bytes += chunk[..<got]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
