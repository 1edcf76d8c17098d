import Glibc
import Mappings
import Publishing

// First, before anything opens a descriptor: what dockerd may have handed us on fd 3 (the status pipe)
// and fd 4 (the listening socket). Only docker-proxy mode uses it; probing changes nothing.
let inherited = InheritedDescriptors.probe()

ProcessStart.releaseRelocationTable()
ProcessStart.ignoreBrokenPipes()

// dockerd execs its userland proxy with Go-style single-dash flags; anything else is
// berth's own command line.
let arguments = Array(CommandLine.arguments.dropFirst())
if ProxyFlags.looksLikeProxyInvocation(arguments) {
    exit(ProxyMode.main(arguments, inherited: inherited))
}
exit(Berth.main(arguments))
