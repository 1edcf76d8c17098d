#if canImport(Glibc)
import Glibc
#endif

/// A failed netfilter operation: which object, what was attempted, and why (with the errno text).
///
/// `description` reads like `nftables: add map inet berth_123 dnat4: Operation not permitted`.
package struct NetfilterError: Error, CustomStringConvertible, Sendable {
    /// What was attempted, naming the object: `nftables: add map inet berth_123 dnat4`.
    package let operation: String
    /// The errno the kernel (or libc) reported; 0 when the failure is ours, not the kernel's.
    package let errno: Int32
    /// `strerror(errno)`, or our own words when `errno` is 0.
    package let reason: String

    package init(_ operation: String, errno: Int32) {
        self.operation = operation
        self.errno = errno
        self.reason = String(cString: strerror(errno))
    }

    package init(_ operation: String, reason: String) {
        self.operation = operation
        self.errno = 0
        self.reason = reason
    }

    init(_ operation: String, errno: Int32, extra: String?) {
        self.operation = operation
        self.errno = errno
        let text = String(cString: strerror(errno))
        self.reason = extra.map { "\(text) (\($0))" } ?? text
    }

    package var description: String { "\(operation): \(reason)" }
}
