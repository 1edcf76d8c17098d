// Where berth's log lines go: stderr (swift-log's stream handler, as always), and/or a file or
// syslog when asked (`--log-file`, `--log-syslog`, or `BERTH_LOG` in docker-proxy mode, whose stderr
// dockerd points at /dev/null).

import LogSinks
import Logging
import Mappings
import Publishing

/// The file and syslog socket berth logs to, kept for SIGHUP.
final class LogOutputs: Sendable {
    let file: LogFile?
    let syslog: SyslogSocket?

    init(file: LogFile?, syslog: SyslogSocket?) {
        self.file = file
        self.syslog = syslog
    }

    /// Opens what `settings` asks for, then routes swift-log there (once per process). The error
    /// is one line: `<origin>: open /var/log/berth.log: permission denied`, origin naming the option
    /// or variable that asked for it.
    static func bootstrap(
        _ settings: LogSettings,
        fileOrigin: String,
        syslogOrigin: String
    ) throws(StartError) -> LogOutputs {
        let level = Logger.Level(rawValue: settings.level) ?? .notice
        var file: LogFile?
        var syslog: SyslogSocket?
        if let path = settings.file {
            do { file = try LogFile(path: path) } catch { throw StartError("\(fileOrigin): \(error)") }
        }
        if let path = settings.syslog {
            do { syslog = try SyslogSocket(path: path) } catch { throw StartError("\(syslogOrigin): \(error)") }
        }
        let outputs = LogOutputs(file: file, syslog: syslog)
        LoggingSystem.bootstrap { label in
            var handlers: [any LogHandler] = []
            if settings.stderr {
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                handlers.append(handler)
            }
            if let file = outputs.file { handlers.append(SinkLogHandler(sink: file, level: level)) }
            if let syslog = outputs.syslog { handlers.append(SinkLogHandler(sink: syslog, level: level)) }
            return handlers.count == 1 ? handlers[0] : MultiplexLogHandler(handlers)
        }
        return outputs
    }

    /// SIGHUP: the file is opened anew (logrotate renamed it) and syslog connected to again. What
    /// cannot be reopened stays as it was, and the line saying so goes where lines still go.
    func reopen(_ logger: Logger) {
        if let file {
            do {
                try file.reopen()
                logger.info("SIGHUP: reopened \(file.path)")
            } catch {
                logger.error("SIGHUP: cannot reopen the log file (\(error)): still writing to the old one")
            }
        }
        if let syslog {
            do { try syslog.reconnect() } catch { logger.error("SIGHUP: cannot connect to syslog again: \(error)") }
        }
    }
}

/// One line for the user, from a step that is not the publisher's.
struct StartError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
