// berth-cni: a chained CNI plugin that publishes a container's ports (runtimeConfig.portMappings)
// through a berth daemon, or with nftables DNAT when no daemon answers. The runtime runs it with
// the CNI_* environment and the configuration on stdin (SPEC.md); see the README.

import CNI
import Control
import Glibc
import LinuxIO

signal(SIGPIPE, SIG_IGN)

func printOut(_ text: String) { File.writeAll(1, text + "\n") }
func printErr(_ text: String) { File.writeAll(2, "berth-cni: \(text)\n") }

/// The spec's error JSON on stdout, one line on stderr, exit 1.
func fail(_ error: CNIError, cniVersion: String = "1.1.0") -> Never {
    printOut(error.json(cniVersion: cniVersion).serialized())
    printErr(error.description)
    exit(1)
}

let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.contains("--help") || arguments.contains("-h") || arguments.contains("--version") {
    printOut(
        """
        berth-cni: a chained CNI plugin (spec 0.3.0 to 1.1.0) that publishes runtimeConfig.portMappings.
        A container runtime runs it with CNI_COMMAND (ADD, DEL, CHECK, STATUS, GC, VERSION), CNI_CONTAINERID,
        CNI_NETNS, CNI_IFNAME and the plugin configuration on stdin. Configuration keys:
          "control": a berth daemon's socket (default /run/berth/berth.sock); when it answers, the daemon serves
                     the ports (loopback and IPv6-to-IPv4 too), owned by cni/<network>/<container id>/<ifname>
          "table":   the nftables table (inet family, default berth_cni) used when no daemon answers
        """
    )
    exit(0)
}

let environment: CNIEnvironment
let stdinBytes: [UInt8]
do throws(CNIError) {
    environment = try CNIEnvironment.read { ThisProcess.environment($0) }
} catch {
    fail(error)
}
do {
    stdinBytes = try File.readAll(0)
} catch {
    fail(CNIError(CNIError.ioFailure, "cannot read the configuration on stdin", details: "\(error)"))
}

switch Plugin.run(environment, stdin: stdinBytes) {
case .success(let output):
    for notice in output.notices { printErr(notice) }
    if let text = output.stdout { printOut(text) }
    exit(0)
case .failure(let error):
    fail(error, cniVersion: PluginConfig.askedVersion(stdinBytes))
}
