import Glibc
import LinuxIO
import Mappings

// First, before anything opens a descriptor: what dockerd may have handed us on fd 3 (the status pipe)
// and fd 4 (the listening socket). Only docker-proxy mode uses it; probing changes nothing.
let inherited = InheritedDescriptors.probe()

// ld.so is done with the relocation table: its pages are a tenth of berth's idle memory.
Memory.releaseRelocationTable()

// splice(2) has no MSG_NOSIGNAL: writing to a socket whose peer reset must be an EPIPE that the
// relay turns into a reset of the other side, never a signal that ends berth.
signal(SIGPIPE, SIG_IGN)

// dockerd execs its userland proxy with Go-style single-dash flags; anything else is
// berth's own command line.
let arguments = Array(CommandLine.arguments.dropFirst())
if ProxyFlags.looksLikeProxyInvocation(arguments) {
    exit(ProxyMode.main(arguments, inherited: inherited))
}
exit(Berth.main(arguments))
