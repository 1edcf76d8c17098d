// docker-proxy compatible mode: what dockerd runs as its userland proxy (see the README section
// "Using berth as Docker's userland proxy").
//
// dockerd (28, 29, daemon/libnetwork/portmapper/proxy_linux.go) execs
//   PROXY -proto tcp -host-ip 0.0.0.0 -host-port 8080 -container-ip 172.17.0.2 -container-port 80 [-use-listen-fd]
// with the write end of a pipe as fd 3 and, with -use-listen-fd, the bound socket as fd 4. It reads two
// bytes from the pipe: "0\n" means the proxy is ready; anything else is a failure whose text follows
// ("1\n<error>"), read to end of file. It stops the proxy with SIGINT.
//
// berth keeps docker-proxy's contract and its exit codes (0 after SIGINT/SIGTERM, 1 for a failed start,
// 2 for a bad command line), with one event loop thread and berth's relay behind it.

import Glibc
import Logging
import Mappings
import Publishing

/// docker-proxy compatible mode: one mapping, readiness on fd 3.
enum ProxyMode {
    static let stopSignals = [SIGINT, SIGTERM]

    static func main(_ arguments: [String], inherited: InheritedDescriptors) -> Int32 {
        let program = CommandLine.arguments.first ?? "berth"
        let command: ProxyCommand
        do {
            command = try ProxyFlags.parse(arguments)
        } catch {
            // As Go's flag package: the problem, the usage, exit 2. Nothing goes to fd 3.
            writeStderr("\(error.message)\n" + ProxyFlags.usage(program: program))
            return 2
        }
        switch command {
        case .version:
            say(berthVersion)
            return 0
        case .help:
            writeStderr(ProxyFlags.usage(program: program))
            return 0
        case .run(let invocation):
            return run(invocation, inherited: inherited)
        }
    }

    /// Where log lines go in this mode, since dockerd passes no extra flags (README, "Logs").
    static let logVariable = "BERTH_LOG"

    private static func run(_ invocation: ProxyInvocation, inherited: InheritedDescriptors) -> Int32 {
        let logSettings: Result<LogSettings, EnvironmentError> = Result { () throws(EnvironmentError) in
            try LogSettings.parse(berthLog: ProcessStart.environment(logVariable) ?? "")
        }
        // Before anything can fail or be waited on: a stop request between the readiness report and the
        // signalfd stays pending rather than killing berth, and a closed status pipe is not fatal. SIGHUP
        // too when there is a log file to reopen.
        let wantsHangup = (try? logSettings.get())?.wantsHangup ?? false
        ProcessStart.blockSignals(stopSignals + (wantsHangup ? [SIGHUP] : []))
        let status = StatusPipe(inherited)
        // A bad BERTH_LOG or a log that cannot be opened is reported on fd 3 too: stderr is /dev/null
        // under dockerd, and fd 3 is what dockerd shows the user.
        let outputs: LogOutputs
        do {
            outputs = try LogOutputs.bootstrap(logSettings.get(), fileOrigin: logVariable, syslogOrigin: logVariable)
        } catch let error as EnvironmentError {
            complain(error.description)
            report(status, "1\n\(error)")
            return 2
        } catch {
            complain("\(error)")
            report(status, "1\n\(error)")
            return 1
        }

        var options = PublishOptions()
        options.threads = 1
        // dockerd programs its own DNAT rules; the userland proxy only relays.
        options.mode = .userspace
        // One mapping per process: every line, the relay's included, says which.
        var logger = Logger(label: "berth")
        logger[metadataKey: "mapping"] = "\(invocation.mapping)"
        let publisher = Publisher(options: options, logger: logger)
        do {
            let port = try publisher.serve(invocation, inherited: inherited)
            logger.debug("\(port.address) -> \(port.target)")
        } catch {
            complain("\(error)")
            // stderr is /dev/null under dockerd: the log file or syslog keeps the failure too.
            if outputs.file != nil || outputs.syslog != nil { logger.error("\(error)") }
            report(status, "1\n\(error)")
            return 1
        }
        report(status, "0\n")
        do {
            try publisher.run(signals: stopSignals, onHangup: wantsHangup ? { outputs.reopen(logger) } : nil)
        } catch {
            complain("\(error)")
            if outputs.file != nil || outputs.syslog != nil { logger.error("\(error)") }
            return 1
        }
        publisher.close()
        return 0
    }

    private static func report(_ status: consuming StatusPipe?, _ text: String) {
        switch consume status {
        case .some(let pipe): pipe.report(text)
        case .none: break
        }
    }
}
