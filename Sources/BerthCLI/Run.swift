import Glibc
import Logging
import Mappings
import Publishing

/// `berth run`: publish ports of one container address until SIGINT or SIGTERM.
enum Run {
    /// The exit code: 0 after SIGINT/SIGTERM, 1 for a failed start, 2 for a bad command line.
    static func main(_ args: [String]) -> Int32 {
        // First: whatever systemd passed is read and the variables are unset, so no child inherits them.
        let activation: PassedSockets?
        do {
            activation = try Publishing.takeListenSockets()
        } catch {
            complain(error.description)
            return 2
        }
        let arguments: RunArguments
        do {
            switch try RunArguments.parse(args) {
            case .help:
                say(RunArguments.help, newline: false)
                return 0
            case .version:
                say(berthVersion)
                return 0
            case .run(let parsed):
                arguments = parsed
            }
        } catch {
            complain(error.description)
            return 2
        }
        var exitCode: Int32 = 0
        guard let prepared = prepare(arguments, exitCode: &exitCode) else { return exitCode }
        let (mappings, logSettings, outputs) = (prepared.mappings, prepared.logSettings, prepared.outputs)
        let options = Self.options(arguments)
        let logger = Logger(label: "berth")
        do {
            let publisher = try Publisher.start(
                mappings,
                mode: arguments.mode,
                options: options,
                logger: logger,
                sockets: activation,
                notice: complain
            )
            for port in publisher.ports { say(port.line) }
            try publisher.run(onHangup: logSettings.wantsHangup ? { outputs.reopen(logger) } : nil)
            publisher.close()
        } catch {
            complain("\(error)")
            return 1
        }
        return 0
    }

    /// What `berth run` and `berth daemon` start with once their command line is read.
    struct Prepared {
        let mappings: [PortMapping]
        let logSettings: LogSettings
        let outputs: LogOutputs
    }

    /// Blocks the stop signals (and SIGHUP, when a log file is there to reopen) before any port is
    /// reported, so a SIGTERM right after the report is not lost (the loop's signalfd picks it up
    /// once it runs); starts logging; expands the `-p` specs. nil after saying why, with the exit code.
    static func prepare(_ arguments: RunArguments, exitCode: inout Int32) -> Prepared? {
        let logSettings = arguments.logSettings
        ProcessStart.blockSignals([SIGINT, SIGTERM] + (logSettings.wantsHangup ? [SIGHUP] : []))
        let outputs: LogOutputs
        do {
            outputs = try LogOutputs.bootstrap(logSettings, fileOrigin: "--log-file", syslogOrigin: "--log-syslog")
        } catch {
            complain(error.description)
            exitCode = 1
            return nil
        }
        var mappings: [PortMapping] = []
        for text in arguments.specs {
            do {
                mappings += try PortSpec(parsing: text).mappings(to: arguments.target)
            } catch {
                complain("\(error)")
                exitCode = 2
                return nil
            }
        }
        return Prepared(mappings: mappings, logSettings: logSettings, outputs: outputs)
    }

    /// The publishing options `berth run`'s command line asks for (the daemon's too).
    static func options(_ arguments: RunArguments) -> PublishOptions {
        var options = PublishOptions()
        options.tableName = arguments.nftTable
        options.threads = arguments.threads ?? ProcessStart.usableCPUs
        options.bulkLoops = arguments.bulkLoops ?? options.threads
        options.bulkNice = Int32(arguments.bulkNice)
        options.relay.bulkAfter = arguments.bulkAfter
        options.relay.connectTimeout = .seconds(arguments.connectTimeout)
        options.relay.halfCloseTimeout = .seconds(arguments.halfCloseTimeout)
        options.relay.pipeSize = arguments.pipeSize
        options.busyPoll = .microseconds(arguments.busyPoll)
        options.relay.udpTimeout = .seconds(arguments.udpTimeout)
        options.relay.udpTimeoutUnreplied = .seconds(arguments.effectiveUDPTimeoutUnreplied)
        options.relay.udpMaxFlows = arguments.udpMaxFlows
        options.relay.udpMaxAnswered = arguments.udpMaxAnswered
        options.relay.proxyProtocol = arguments.proxyProtocol
        options.relay.proxyProtocolUDP = arguments.proxyProtocolUDP
        return options
    }
}
