// The sockets systemd passes with socket activation (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`),
// read as sd_listen_fds(3) reads them.

/// The sockets a service manager passed (sd_listen_fds(3)): descriptors 3, 4, ... in order.
package struct ListenFDs: Sendable, Equatable {
    /// SD_LISTEN_FDS_START.
    package static let start: Int32 = 3
    /// The variables sd_listen_fds reads, and unsets (`unset_environment`) whatever it found.
    package static let variables = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"]

    package let count: Int32
    /// One per descriptor: LISTEN_FDNAMES split at colons, or "unknown" each when it is unset.
    package let names: [String]

    package var descriptors: Range<Int32> { Self.start..<(Self.start + count) }

    package init(count: Int32, names: [String]) {
        self.count = count
        self.names = names
    }

    /// sd_listen_fds_with_names' reading of the three variables for the process `pid`: nil when
    /// none are meant for it (LISTEN_PID unset or another process's, LISTEN_FDS unset or 0);
    /// an error when they are meant for it and do not parse (a pid or count that is not a positive
    /// decimal number, a LISTEN_FDNAMES with more or fewer names than descriptors).
    package static func parse(
        listenPID: String?,
        listenFDs: String?,
        listenFDNames: String?,
        pid: Int32
    ) throws(EnvironmentError) -> ListenFDs? {
        guard let listenPID else { return nil }
        guard let owner = Int32(listenPID), owner > 0 else {
            throw EnvironmentError("LISTEN_PID \(quoted(listenPID)) is not a process id")
        }
        guard owner == pid, let listenFDs else { return nil }
        guard let count = Int32(listenFDs), count >= 0, count <= Int32.max - start else {
            throw EnvironmentError("LISTEN_FDS \(quoted(listenFDs)) is not a number of descriptors")
        }
        if count == 0 { return nil }
        guard let listenFDNames else {
            return ListenFDs(count: count, names: Array(repeating: "unknown", count: Int(count)))
        }
        let names = listenFDNames.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard names.count == count else {
            throw EnvironmentError("LISTEN_FDNAMES has \(names.count) names for \(count) descriptors")
        }
        return ListenFDs(count: count, names: names)
    }
}
