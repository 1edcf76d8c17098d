// Tiny TCP/UDP servers and clients for the DNAT scenario, on TestSupport's blocking sockets;
// each prints one line per exchange.
import Glibc
import LinuxIO
import TestSupport

/// `ADDRESS PORT` from the command line.
func address(_ ip: String, _ port: String) -> SocketAddress {
    guard let number = UInt16(port), let address = SocketAddress(ip: ip, port: number) else {
        fail("not an address and port: \(ip) \(port)")
    }
    return address
}

/// `serve tcp|udp ADDRESS PORT`: answers each connection (after its EOF) or datagram with
/// `got N from PEER`, forever. Prints `listening` once ready.
func serve(_ proto: String, _ address: SocketAddress) -> Never {
    do {
        if proto == "udp" {
            let socket = try TestUDPSocket(host: address.ipText, port: address.port, timeoutMilliseconds: 0)
            listening()
            while true {
                guard let (bytes, peer) = try? socket.receiveFrom() else { continue }
                try? socket.send(Array("got \(bytes.count) from \(peer)\n".utf8), to: peer)
            }
        }
        let server = try TestServer(host: address.ipText, port: address.port) { client in
            let peer = (try? Socket.peerAddress(client.fd)).map { "\($0)" } ?? "?"
            let total = (try? client.receiveAll())?.count ?? 0
            try? client.send("got \(total) from \(peer)\n")
            client.close()
        }
        listening()
        withExtendedLifetime(server) { () -> Never in
            while true { pause() }
        }
    } catch {
        fail("serve \(proto) \(address): \(error)")
    }
}

private func listening() {
    print("listening")
    fflush(nil)
}

/// `client tcp ADDRESS PORT BYTES`: sends BYTES, half-closes, prints the server's answer (or
/// `error: ...`). `client udp ADDRESS PORT SOURCEPORT`: one datagram from a fixed source port,
/// prints the answer, `no reply` or `error: ...`.
func client(_ proto: String, _ address: SocketAddress, _ number: Int) {
    let answer: (bytes: [UInt8], errno: Int32)
    do {
        if proto == "udp" {
            let wildcard = address.isV6 ? "::" : "0.0.0.0"
            let socket = try TestUDPSocket(host: wildcard, port: UInt16(number), timeoutMilliseconds: 1000)
            try socket.connect(address)
            try socket.send([UInt8](repeating: UInt8(ascii: "x"), count: 100))
            let (bytes, errno) = socket.receiveOutcome()
            answer = (bytes ?? [], errno)
        } else {
            let socket = try TestSocket.connect(address, timeoutSeconds: 1)
            try socket.send([UInt8](repeating: UInt8(ascii: "x"), count: number))
            socket.shutdownWrite()
            answer = socket.receiveOutcome()
        }
    } catch {
        print("error: \(error)")
        return
    }
    if !answer.bytes.isEmpty {
        print(String(decoding: answer.bytes, as: UTF8.self).trimmingSuffix { $0 == "\n" })
    } else if answer.errno == 0 || answer.errno == EAGAIN {
        print("no reply")
    } else {
        print("error: read: \(errnoText(answer.errno))")
    }
}

extension String {
    func trimmingSuffix(while drop: (Character) -> Bool) -> String {
        var s = Substring(self)
        while let last = s.last, drop(last) { s = s.dropLast() }
        return String(s)
    }
}
