// The log lines as a user reads them in a file and as syslog receives them, with the clock,
// host name and pid fixed; a file renamed and reopened; a syslog socket bound by the test.

import Glibc
import LinuxIO
import LogSinks
import Logging
import TestSupport
import XCTest

final class LogSinksTests: XCTestCase {
    /// 2026-12-02T12:43:08.123456Z
    static let time = WallTime(seconds: 1_796_215_388, nanoseconds: 123_456_789)

    func testTimestampIsRFC3339InUTCWithMicroseconds() {
        XCTAssertEqual(LogLine.timestamp(Self.time), "2026-12-02T12:43:08.123456Z")
        XCTAssertEqual(LogLine.timestamp(WallTime(seconds: 0, nanoseconds: 0)), "1970-01-01T00:00:00.000000Z")
        // A leap day and the last second of a year.
        XCTAssertEqual(
            LogLine.timestamp(WallTime(seconds: 951_782_400, nanoseconds: 5_000)),
            "2000-02-29T00:00:00.000005Z"
        )
        XCTAssertEqual(
            LogLine.timestamp(WallTime(seconds: 1_767_225_599, nanoseconds: 999_999_999)),
            "2025-12-31T23:59:59.999999Z"
        )
    }

    func testSyslogLineIsRFC5424WithFacilityDaemonAndTheLevelsSeverity() {
        XCTAssertEqual(
            LogLine.syslog(
                .warning,
                "127.0.0.1:8080: out of descriptors",
                metadata: ["mapping": "80/tcp"],
                time: Self.time,
                hostname: "web1",
                pid: 4242
            ),
            "<28>1 2026-12-02T12:43:08.123456Z web1 berth 4242 - - mapping=80/tcp 127.0.0.1:8080: out of descriptors"
        )
        let expected: [(Logger.Level, Int)] = [
            (.trace, 31), (.debug, 31), (.info, 30), (.notice, 29), (.warning, 28), (.error, 27), (.critical, 26),
        ]
        for (level, pri) in expected {
            XCTAssertTrue(
                LogLine.syslog(level, "x", time: Self.time, hostname: "h", pid: 1).hasPrefix("<\(pri)>1 "),
                "\(level)"
            )
        }
        // A host name syslog cannot carry is the nil value.
        XCTAssertEqual(
            LogLine.syslog(.info, "x", time: Self.time, hostname: "", pid: 7),
            "<30>1 2026-12-02T12:43:08.123456Z - berth 7 - - x"
        )
        XCTAssertEqual(
            LogLine.syslog(.info, "x", time: Self.time, hostname: "a b", pid: 7),
            "<30>1 2026-12-02T12:43:08.123456Z - berth 7 - - x"
        )
    }

    func testFileLineIsOneLineWithSortedMetadata() {
        XCTAssertEqual(
            LogLine.file(
                .notice,
                "accepting again",
                metadata: ["mapping": "80/tcp", "a": "1"],
                time: Self.time,
                pid: 99
            ),
            "2026-12-02T12:43:08.123456Z notice berth[99]: a=1 mapping=80/tcp accepting again\n"
        )
        XCTAssertEqual(
            LogLine.file(.error, "two\nlines\r", time: Self.time, pid: 1),
            "2026-12-02T12:43:08.123456Z error berth[1]: two\\nlines\\r\n"
        )
    }

    func testLogFileIsCreated0640AppendsAndReopensAfterARename() throws {
        let dir = try temporaryDirectory()
        let path = dir + "/berth.log"
        let file = try LogFile(path: path, pid: 5, clock: { LogSinksTests.time })
        var info = stat()
        XCTAssertEqual(stat(path, &info), 0)
        XCTAssertEqual(info.st_mode & 0o777, 0o640 & ~currentUmask())
        let logger = Logger(label: "berth") { _ in SinkLogHandler(sink: file, level: .info) }
        logger.info("first")
        logger.debug("not at info")
        XCTAssertEqual(rename(path, path + ".1"), 0)
        logger.info("second, still to the renamed file")
        try file.reopen()
        logger.notice("third", metadata: ["mapping": "53/udp"])
        XCTAssertEqual(
            try contents(path + ".1"),
            [
                "2026-12-02T12:43:08.123456Z info berth[5]: first",
                "2026-12-02T12:43:08.123456Z info berth[5]: second, still to the renamed file",
            ]
        )
        XCTAssertEqual(try contents(path), ["2026-12-02T12:43:08.123456Z notice berth[5]: mapping=53/udp third"])
    }

    func testLogFileThatCannotBeOpenedNamesThePath() {
        XCTAssertThrowsError(try LogFile(path: "/nonexistent-berth-dir/berth.log")) { error in
            XCTAssertEqual("\(error)", "open /nonexistent-berth-dir/berth.log: no such file or directory")
        }
    }

    func testSyslogSocketSendsOneDatagramPerLineAndReconnects() throws {
        let dir = try temporaryDirectory()
        let path = dir + "/log.sock"
        var server = try TestUnixDatagramServer(path: path)
        let sink = try SyslogSocket(path: path, hostname: "host", pid: 77, clock: { LogSinksTests.time })
        let logger = Logger(label: "berth") { _ in SinkLogHandler(sink: sink, level: .debug) }
        logger.debug("hello", metadata: ["mapping": "80/tcp"])
        XCTAssertEqual(try server.receive(), "<31>1 2026-12-02T12:43:08.123456Z host berth 77 - - mapping=80/tcp hello")
        // syslog restarts: a fresh socket at the same path. The next line reaches it.
        server = try TestUnixDatagramServer(path: path)
        logger.error("after the restart")
        XCTAssertEqual(try server.receive(), "<27>1 2026-12-02T12:43:08.123456Z host berth 77 - - after the restart")
    }

    func testSyslogSocketThatIsMissingIsAnError() {
        XCTAssertThrowsError(try SyslogSocket(path: "/nonexistent-berth-dir/log")) { error in
            XCTAssertEqual("\(error)", "connect /nonexistent-berth-dir/log: no such file or directory")
        }
    }

    private func contents(_ path: String) throws -> [String] {
        guard let text = readFile(path) else { throw TestFailure("cannot read \(path)") }
        return text.split(separator: "\n").map(String.init)
    }

    private func currentUmask() -> mode_t {
        let mask = umask(0o022)
        umask(mask)
        return mask
    }
}
