// What berth reads from its environment, as pure functions of the values: where log lines go in
// docker-proxy mode (`BERTH_LOG`, since dockerd passes no extra flags), and the sockets systemd
// passes with socket activation (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`).

/// An environment variable whose value berth cannot use: print `berth: <description>` and exit 2.
public struct EnvironmentError: Error, Sendable, Equatable, CustomStringConvertible {
    /// One line, naming the variable.
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Where log lines go, and from which level on.
public struct LogSettings: Sendable, Equatable {
    /// Lines on stderr, as swift-log's stream handler writes them.
    public var stderr: Bool
    /// Appended to this file, reopened on SIGHUP.
    public var file: String?
    /// RFC 5424 datagrams to syslog's socket (/dev/log), facility daemon.
    public var syslog: Bool
    /// One of `RunArguments.logLevels`.
    public var level: String

    public init(stderr: Bool = true, file: String? = nil, syslog: Bool = false, level: String = "notice") {
        self.stderr = stderr
        self.file = file
        self.syslog = syslog
        self.level = level
    }

    /// Whether there is something SIGHUP should reopen or reconnect.
    public var wantsHangup: Bool { file != nil || syslog }

    /// Reads `BERTH_LOG`: items separated by commas, each one of
    ///   `stderr`, `syslog`, `file:PATH` (PATH absolute, without commas), `level=LEVEL`.
    /// Examples: `file:/var/log/berth.log`, `syslog,level=debug`, `stderr,file:/tmp/b.log`.
    /// Naming a file or syslog turns stderr off unless `stderr` is named too; `level=` alone keeps
    /// stderr. An empty value is the same as none. Anything else is an error naming the item.
    public static func parse(
        berthLog value: String,
        defaultLevel: String = "notice"
    ) throws(EnvironmentError) -> LogSettings {
        var settings = LogSettings(stderr: false, level: defaultLevel)
        var named = false
        for item in value.split(separator: ",", omittingEmptySubsequences: false) {
            if item == "stderr" {
                settings.stderr = true
                named = true
            } else if item == "syslog" {
                settings.syslog = true
                named = true
            } else if item.hasPrefix("file:") {
                let path = String(item.dropFirst(5))
                guard path.hasPrefix("/") else {
                    throw EnvironmentError("BERTH_LOG: \(quoted(item)): the file must be an absolute path")
                }
                if settings.file != nil { throw EnvironmentError("BERTH_LOG: one file:PATH at most") }
                settings.file = path
                named = true
            } else if item.hasPrefix("level=") {
                let level = String(item.dropFirst(6))
                guard RunArguments.logLevels.contains(level) else {
                    let choices = RunArguments.logLevels.dropLast().joined(separator: ", ") + " or critical"
                    throw EnvironmentError("BERTH_LOG: invalid level \(quoted(level)): must be \(choices)")
                }
                settings.level = level
            } else if value.isEmpty {
                break
            } else {
                throw EnvironmentError(
                    "BERTH_LOG: unknown item \(quoted(item)): must be stderr, syslog, file:PATH or level=LEVEL"
                )
            }
        }
        if !named { settings.stderr = true }
        return settings
    }
}

/// The sockets a service manager passed (sd_listen_fds(3)): descriptors 3, 4, ... in order.
public struct ListenFDs: Sendable, Equatable {
    /// SD_LISTEN_FDS_START.
    public static let start: Int32 = 3
    /// The variables sd_listen_fds reads, and unsets (`unset_environment`) whatever it found.
    public static let variables = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"]

    public let count: Int32
    /// One per descriptor: LISTEN_FDNAMES split at colons, or "unknown" each when it is unset.
    public let names: [String]

    public var descriptors: Range<Int32> { Self.start..<(Self.start + count) }

    public init(count: Int32, names: [String]) {
        self.count = count
        self.names = names
    }

    /// sd_listen_fds_with_names' reading of the three variables for the process `pid`: nil when
    /// none are meant for it (LISTEN_PID unset or another process's, LISTEN_FDS unset or 0);
    /// an error when they are meant for it and do not parse (a pid or count that is not a positive
    /// decimal number, a LISTEN_FDNAMES with more or fewer names than descriptors).
    public static func parse(
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

extension RunArguments {
    /// `--log-file`, `--log-syslog` and `--log-level` together; stderr when neither is given.
    public var logSettings: LogSettings {
        LogSettings(stderr: logFile == nil && !logSyslog, file: logFile, syslog: logSyslog, level: logLevel)
    }
}
