// Where log lines go (`--log-file`, `--log-syslog`, `--log-level`, or `BERTH_LOG` in docker-proxy
// mode, since dockerd passes no extra flags), read as pure functions of the values.

/// Where log lines go, and from which level on.
package struct LogSettings: Sendable, Equatable {
    /// Lines on stderr, as swift-log's stream handler writes them.
    package var stderr: Bool
    /// Appended to this file, reopened on SIGHUP.
    package var file: String?
    /// RFC 5424 datagrams to this unix socket (syslog's, `defaultSyslogSocket`), facility daemon;
    /// nil: none.
    package var syslog: String?
    /// One of `RunArguments.logLevels`.
    package var level: String

    /// Where syslog listens unless told otherwise.
    package static let defaultSyslogSocket = "/dev/log"

    package init(stderr: Bool = true, file: String? = nil, syslog: String? = nil, level: String = "notice") {
        self.stderr = stderr
        self.file = file
        self.syslog = syslog
        self.level = level
    }

    /// Whether there is something SIGHUP should reopen or reconnect.
    package var wantsHangup: Bool { file != nil || syslog != nil }

    /// Reads `BERTH_LOG`: items separated by commas, each one of
    ///   `stderr`, `syslog` or `syslog:PATH` (syslog's socket, /dev/log unless PATH names another),
    ///   `file:PATH`, `level=LEVEL`; each PATH absolute, without commas.
    /// Examples: `file:/var/log/berth.log`, `syslog,level=debug`, `stderr,file:/tmp/b.log`.
    /// Naming a file or syslog turns stderr off unless `stderr` is named too; `level=` alone keeps
    /// stderr. An empty value is the same as none. Anything else is an error naming the item.
    package static func parse(
        berthLog value: String,
        defaultLevel: String = "notice"
    ) throws(EnvironmentError) -> LogSettings {
        var settings = LogSettings(stderr: false, level: defaultLevel)
        var named = false
        for item in value.split(separator: ",", omittingEmptySubsequences: false) {
            if item == "stderr" {
                settings.stderr = true
                named = true
            } else if item == "syslog" || item.hasPrefix("syslog:") {
                let path = item == "syslog" ? defaultSyslogSocket : String(item.dropFirst(7))
                guard path.hasPrefix("/") else {
                    throw EnvironmentError("BERTH_LOG: \(quoted(item)): the socket must be an absolute path")
                }
                if let earlier = settings.syslog, earlier != path {
                    throw EnvironmentError("BERTH_LOG: one syslog socket at most")
                }
                settings.syslog = path
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
                    "BERTH_LOG: unknown item \(quoted(item)): must be stderr, syslog, syslog:PATH, file:PATH or level=LEVEL"
                )
            }
        }
        if !named { settings.stderr = true }
        return settings
    }
}

extension RunArguments {
    /// `--log-file`, `--log-syslog` (`--log-syslog-socket`) and `--log-level` together; stderr when
    /// neither is given.
    package var logSettings: LogSettings {
        LogSettings(stderr: logFile == nil && logSyslog == nil, file: logFile, syslog: logSyslog, level: logLevel)
    }
}
