// The one place where berth calls libc for I/O. Every wrapper goes through `syscall`:
// EINTR retries, EAGAIN becomes `.wouldBlock` for calls that may block, anything
// else throws a `SyscallError` that names the call and carries errno. EBADF and
// EFAULT trap: they are berth's own bugs, never the peer's.

import CBerthLinux
import Glibc
import SystemPackage

/// A failed system call: which call, on what, and errno.
public struct SyscallError: Error, Sendable, CustomStringConvertible {
    public let call: StaticString
    /// What the call was about (`0.0.0.0:80`), empty on the hot path to avoid allocating.
    package var subject: String
    package let errno: Errno

    package init(_ call: StaticString, _ errno: Errno, subject: String = "") {
        self.call = call
        self.errno = errno
        self.subject = subject
    }

    /// `bind 0.0.0.0:80: address already in use`
    public var description: String {
        let what = subject.isEmpty ? "\(call)" : "\(call) \(subject)"
        return "\(what): \(SyscallError.text(errno))"
    }

    /// strerror text, first letter lowercased, as error lines read in Unix tools.
    package static func text(_ errno: Errno) -> String {
        let text = String(cString: strerror(errno.rawValue))
        guard let first = text.first else { return text }
        return first.lowercased() + text.dropFirst()
    }

    /// The same error about something: `error.about("0.0.0.0:80")`.
    package func about(_ subject: String) -> SyscallError {
        var copy = self
        copy.subject = subject
        return copy
    }
}

/// The outcome of a call on a non-blocking descriptor.
package enum IOResult<Value> {
    case done(Value)
    case wouldBlock
}

extension IOResult: Sendable where Value: Sendable {}

@inline(__always)
private func checkBug(_ call: StaticString, _ err: Int32) {
    if err == EBADF || err == EFAULT {
        fatalError("\(call) failed with \(SyscallError.text(Errno(rawValue: err))): a bug in berth")
    }
}

/// Runs `body` until it stops failing with EINTR. Throws on any other failure.
@inline(__always)
package func syscall<T: BinaryInteger>(_ call: StaticString, _ body: () -> T) throws(SyscallError) -> T {
    while true {
        let result = body()
        if result != -1 { return result }
        let err = Glibc.errno
        if err == EINTR { continue }
        checkBug(call, err)
        throw SyscallError(call, Errno(rawValue: err))
    }
}

/// Like `syscall`, but EAGAIN/EWOULDBLOCK is an answer, not an error.
@inline(__always)
package func syscallNonBlocking<T: BinaryInteger>(
    _ call: StaticString,
    _ body: () -> T
) throws(SyscallError) -> IOResult<T> {
    while true {
        let result = body()
        if result != -1 { return .done(result) }
        let err = Glibc.errno
        if err == EINTR { continue }
        if err == EAGAIN || err == EWOULDBLOCK { return .wouldBlock }
        checkBug(call, err)
        throw SyscallError(call, Errno(rawValue: err))
    }
}
