// What berth reads from its environment is read as pure functions of the values (LogSettings.swift:
// `BERTH_LOG`; ListenFDs.swift: `LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`); a value it cannot use
// is this error.

/// An environment variable whose value berth cannot use: print `berth: <description>` and exit 2.
package struct EnvironmentError: Error, Sendable, Equatable, CustomStringConvertible {
    /// One line, naming the variable.
    package let message: String
    package init(_ message: String) { self.message = message }
    package var description: String { message }
}
