// What berth reports on its standard streams: every line whole and at once (stdout may be a pipe a
// script reads), short writes and EINTR retried, a closed stream no error.

import LinuxIO

package enum Console {
    /// A line (or text) on stdout.
    package static func say(_ line: String, newline: Bool = true) {
        File.writeAll(.output, newline ? line + "\n" : line)
    }

    /// Text on stderr, as it is.
    package static func writeStderr(_ text: String) {
        File.writeAll(.error, text)
    }
}
