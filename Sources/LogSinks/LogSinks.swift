// Log destinations that survive a process whose stdout and stderr are /dev/null (dockerd's
// userland proxy): a file, appended to and reopened on SIGHUP for logrotate, and syslog's unix
// datagram socket, one RFC 5424 line per datagram. Each line goes out with one write(2) (or
// send(2)) through LinuxIO, under a lock: loops on several threads log, and the reopen swaps the
// descriptor under the same lock. Logging is off the hot path; the lock costs nothing there.

import Glibc
import LinuxIO
import Logging
import Synchronization

/// The text of log lines, as pure functions of what goes in them (tests fix the clock, host, pid).
package enum LogLine {
    /// RFC 3339 in UTC with microseconds, as RFC 5424's TIMESTAMP allows: `2026-12-02T12:43:08.123456Z`.
    package static func timestamp(_ time: WallTime) -> String {
        let days = time.seconds >= 0 ? time.seconds / 86_400 : (time.seconds - 86_399) / 86_400
        let secondOfDay = time.seconds - days * 86_400
        // Days since 1970-01-01 to a civil date (Howard Hinnant's days_from_civil, inverted).
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        func pad(_ value: Int64, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(secondOfDay / 3600, 2)):"
            + "\(pad(secondOfDay / 60 % 60, 2)):\(pad(secondOfDay % 60, 2)).\(pad(Int64(time.nanoseconds / 1000), 6))Z"
    }

    /// syslog severity of a swift-log level (RFC 5424 section 6.2.1); trace has none finer than debug.
    package static func severity(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }

    /// Facility daemon (3).
    package static let facility = 3

    /// `key=value` pairs sorted by key, then the message, on one line: a newline in either is
    /// written `\n`, so that one entry stays one line.
    package static func text(_ message: String, metadata: Logger.Metadata) -> String {
        let pairs = metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        let text = (pairs + [message]).joined(separator: " ")
        guard text.utf8.contains(where: { $0 == 10 || $0 == 13 }) else { return text }
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// A log file's line: `2026-12-02T12:43:08.123456Z notice berth[4242]: mapping=80/tcp message\n`.
    package static func file(
        _ level: Logger.Level,
        _ message: String,
        metadata: Logger.Metadata = [:],
        time: WallTime,
        pid: Int32
    ) -> String {
        "\(timestamp(time)) \(level) berth[\(pid)]: \(text(message, metadata: metadata))\n"
    }

    /// An RFC 5424 message, `<PRI>1 TIMESTAMP HOSTNAME berth PID - - MSG`, without MSGID or
    /// structured data (the metadata is in MSG) and without a trailing newline (one datagram is one
    /// message). A host name that is empty or not printable ASCII is `-`, the nil value.
    package static func syslog(
        _ level: Logger.Level,
        _ message: String,
        metadata: Logger.Metadata = [:],
        time: WallTime,
        hostname: String,
        pid: Int32
    ) -> String {
        let pri = facility * 8 + severity(level)
        let printable =
            !hostname.isEmpty && hostname.utf8.count <= 255 && hostname.utf8.allSatisfy { $0 > 32 && $0 < 127 }
        return
            "<\(pri)>1 \(timestamp(time)) \(printable ? hostname : "-") berth \(pid) - - \(text(message, metadata: metadata))"
    }
}

/// Where a `SinkLogHandler` sends what it is given; safe to call from any thread.
package protocol LogSink: Sendable {
    func emit(_ level: Logger.Level, _ message: String, metadata: Logger.Metadata)
}

/// Writes `text` with one write(2) or send(2) from its UTF-8 bytes.
private func withBytes<R>(_ text: String, _ body: (UnsafeRawBufferPointer) -> R) -> R {
    var text = text
    return text.withUTF8 { body(UnsafeRawBufferPointer($0)) }
}

/// A log file opened for appending (created 0640), one write(2) per line. `reopen` (on SIGHUP)
/// opens the path anew, so that after logrotate renamed the file berth writes to a fresh one.
package final class LogFile: LogSink {
    package let path: String
    private let descriptor: Mutex<Descriptor>
    private let pid: Int32
    private let clock: @Sendable () -> WallTime

    package init(
        path: String,
        pid: Int32 = ThisProcess.id,
        clock: @escaping @Sendable () -> WallTime = WallTime.now
    ) throws(SyscallError) {
        self.path = path
        self.pid = pid
        self.clock = clock
        descriptor = Mutex(try File.openForAppending(path))
    }

    /// Opens the path again and writes there from now on. If it cannot be opened, the old file
    /// stays in use and the error says why.
    package func reopen() throws(SyscallError) {
        let path = self.path
        try descriptor.withLock { (current: inout Descriptor) throws(SyscallError) in
            current = try File.openForAppending(path)  // the old one closes here
        }
    }

    package func emit(_ level: Logger.Level, _ message: String, metadata: Logger.Metadata) {
        let line = LogLine.file(level, message, metadata: metadata, time: clock(), pid: pid)
        descriptor.withLock { current in
            // Nowhere to report a failed log write (a full disk): the line is lost.
            _ = withBytes(line) { try? File.write(current, $0) }
        }
    }
}

/// syslog's unix datagram socket (`/dev/log`), one RFC 5424 message per datagram. The socket is
/// non-blocking: when syslog cannot keep up the line is dropped rather than stall an event loop.
/// A syslog daemon that restarted (the socket refuses, or is gone) is connected to again once per line.
package final class SyslogSocket: LogSink {
    package let path: String
    private let socket: Mutex<Descriptor>
    private let hostname: String
    private let pid: Int32
    private let clock: @Sendable () -> WallTime

    package init(
        path: String,
        hostname: String = ThisProcess.hostname,
        pid: Int32 = ThisProcess.id,
        clock: @escaping @Sendable () -> WallTime = WallTime.now
    ) throws(SyscallError) {
        self.path = path
        self.hostname = hostname
        self.pid = pid
        self.clock = clock
        socket = Mutex(try Socket.connectUnixDatagram(path))
    }

    /// Connects again (on SIGHUP, or after syslog restarted).
    package func reconnect() throws(SyscallError) {
        let path = self.path
        try socket.withLock { (current: inout Descriptor) throws(SyscallError) in
            current = try Socket.connectUnixDatagram(path)
        }
    }

    package func emit(_ level: Logger.Level, _ message: String, metadata: Logger.Metadata) {
        let line = LogLine.syslog(level, message, metadata: metadata, time: clock(), hostname: hostname, pid: pid)
        let path = self.path
        socket.withLock { current in
            for attempt in 0..<2 {
                let sent = withBytes(line) { bytes in
                    Result { () throws(SyscallError) -> IOResult<Int> in
                        // Never empty: it starts with <PRI>.
                        guard let base = bytes.baseAddress else { return .done(0) }
                        return try Socket.send(current, from: base, count: bytes.count)
                    }
                }
                switch sent {
                case .success: return
                case .failure(let error):
                    let gone =
                        error.errno == .connectionRefused || error.errno == .socketNotConnected
                        || error.errno == .noSuchFileOrDirectory
                    guard attempt == 0, gone, let fresh = try? Socket.connectUnixDatagram(path) else { return }
                    current = fresh
                }
            }
        }
    }
}

/// A swift-log handler that hands each entry, with its metadata, to a sink.
package struct SinkLogHandler: LogHandler {
    package var logLevel: Logger.Level
    package var metadata: Logger.Metadata = [:]
    package var metadataProvider: Logger.MetadataProvider?
    package let sink: any LogSink

    package init(sink: any LogSink, level: Logger.Level, metadataProvider: Logger.MetadataProvider? = nil) {
        self.sink = sink
        self.logLevel = level
        self.metadataProvider = metadataProvider
    }

    package subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    package func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let own = event.metadata { merged.merge(own) { _, new in new } }
        sink.emit(event.level, event.message.description, metadata: merged)
    }
}
