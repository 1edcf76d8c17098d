import Mappings
import Testing

private func settings(_ value: String) throws(EnvironmentError) -> LogSettings {
    try LogSettings.parse(berthLog: value)
}

@Suite struct BerthLogTests {
    @Test func destinationsAndLevel() throws {
        #expect(try settings("") == LogSettings())
        #expect(try settings("file:/var/log/berth.log") == LogSettings(stderr: false, file: "/var/log/berth.log"))
        #expect(try settings("syslog") == LogSettings(stderr: false, syslog: "/dev/log"))
        #expect(try settings("syslog,level=debug") == LogSettings(stderr: false, syslog: "/dev/log", level: "debug"))
        #expect(try settings("level=info") == LogSettings(level: "info"))
        #expect(
            try settings("stderr,file:/tmp/b.log,syslog,level=error")
                == LogSettings(stderr: true, file: "/tmp/b.log", syslog: "/dev/log", level: "error")
        )
        #expect(try settings("syslog:/run/log.sock") == LogSettings(stderr: false, syslog: "/run/log.sock"))
        #expect(try settings("syslog,syslog:/dev/log") == LogSettings(stderr: false, syslog: "/dev/log"))
        #expect(
            try settings("file:/a").wantsHangup && settings("syslog").wantsHangup && !settings("stderr").wantsHangup
        )
    }

    @Test(arguments: [
        ("files", #"BERTH_LOG: unknown item "files": must be stderr, syslog, syslog:PATH, file:PATH or level=LEVEL"#),
        ("syslog,", #"BERTH_LOG: unknown item "": must be stderr, syslog, syslog:PATH, file:PATH or level=LEVEL"#),
        ("file:", #"BERTH_LOG: "file:": the file must be an absolute path"#),
        ("file:berth.log", #"BERTH_LOG: "file:berth.log": the file must be an absolute path"#),
        ("file:/a,file:/b", "BERTH_LOG: one file:PATH at most"),
        ("syslog:log.sock", #"BERTH_LOG: "syslog:log.sock": the socket must be an absolute path"#),
        ("syslog,syslog:/run/log.sock", "BERTH_LOG: one syslog socket at most"),
        (
            "level=loud",
            #"BERTH_LOG: invalid level "loud": must be trace, debug, info, notice, warning, error or critical"#
        ),
    ])
    func badValuesAreOneLine(value: String, message: String) {
        #expect(throws: EnvironmentError(message)) { try settings(value) }
    }

    @Test func runOptions() throws {
        guard case .run(let plain) = try RunArguments.parse(["-p", "80", "127.0.0.1"]) else { return }
        #expect(plain.logSettings == LogSettings())
        guard
            case .run(let logged) = try RunArguments.parse(
                ["--log-file", "/tmp/b.log", "--log-syslog", "--log-level=debug", "-p", "80", "127.0.0.1"])
        else { return }
        #expect(
            logged.logSettings == LogSettings(stderr: false, file: "/tmp/b.log", syslog: "/dev/log", level: "debug")
        )
        #expect(throws: RunArgumentError("--log-syslog takes no value")) {
            try RunArguments.parse(["--log-syslog=yes", "-p", "80", "127.0.0.1"])
        }
        guard
            case .run(let socket) = try RunArguments.parse(
                ["--log-syslog-socket", "/run/log.sock", "--log-syslog", "-p", "80", "127.0.0.1"])
        else { return }
        #expect(socket.logSettings == LogSettings(stderr: false, syslog: "/run/log.sock"))
        #expect(throws: RunArgumentError("--log-syslog-socket needs an absolute path")) {
            try RunArguments.parse(["--log-syslog-socket=log.sock", "-p", "80", "127.0.0.1"])
        }
        #expect(throws: RunArgumentError("--log-file needs a path")) {
            try RunArguments.parse(["--log-file=", "-p", "80", "127.0.0.1"])
        }
    }
}

@Suite struct ListenFDsTests {
    @Test func forThisProcess() throws {
        #expect(
            try ListenFDs.parse(listenPID: "42", listenFDs: "2", listenFDNames: nil, pid: 42)
                == ListenFDs(count: 2, names: ["unknown", "unknown"])
        )
        let named = try #require(
            try ListenFDs.parse(listenPID: "42", listenFDs: "2", listenFDNames: "web:dns", pid: 42)
        )
        #expect(named.names == ["web", "dns"])
        #expect(named.descriptors == 3..<5)
    }

    @Test func notForThisProcess() throws {
        #expect(try ListenFDs.parse(listenPID: nil, listenFDs: "2", listenFDNames: nil, pid: 42) == nil)
        #expect(try ListenFDs.parse(listenPID: "41", listenFDs: "2", listenFDNames: nil, pid: 42) == nil)
        #expect(try ListenFDs.parse(listenPID: "42", listenFDs: nil, listenFDNames: nil, pid: 42) == nil)
        #expect(try ListenFDs.parse(listenPID: "42", listenFDs: "0", listenFDNames: nil, pid: 42) == nil)
        // Another process's variables are not read further, as sd_listen_fds does.
        #expect(try ListenFDs.parse(listenPID: "41", listenFDs: "x", listenFDNames: "a:b:c", pid: 42) == nil)
    }

    @Test(
        arguments: [
            ("x", "2", nil, #"LISTEN_PID "x" is not a process id"#),
            ("0", "2", nil, #"LISTEN_PID "0" is not a process id"#),
            ("42", "two", nil, #"LISTEN_FDS "two" is not a number of descriptors"#),
            ("42", "-1", nil, #"LISTEN_FDS "-1" is not a number of descriptors"#),
            ("42", "2", "web", "LISTEN_FDNAMES has 1 names for 2 descriptors"),
        ] as [(String, String, String?, String)]
    )
    func badValues(pid: String, fds: String, names: String?, message: String) {
        #expect(throws: EnvironmentError(message)) {
            try ListenFDs.parse(listenPID: pid, listenFDs: fds, listenFDNames: names, pid: 42)
        }
    }
}
