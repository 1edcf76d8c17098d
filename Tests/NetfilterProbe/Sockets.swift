// Tiny TCP/UDP servers and clients for the DNAT scenario; each prints one line per exchange.
import Mappings

#if canImport(Glibc)
import Glibc
#endif

/// A sockaddr for `address:port`, passed to `body` with its length.
func withSockaddr<R>(_ address: IPAddress, _ port: UInt16, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
    var storage = sockaddr_storage()
    return withUnsafeMutableBytes(of: &storage) { raw in
        let bytes = address.bytes
        if address.isV6 {
            let sin6 = raw.baseAddress!.assumingMemoryBound(to: sockaddr_in6.self)
            sin6.pointee.sin6_family = sa_family_t(AF_INET6)
            sin6.pointee.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin6.pointee.sin6_addr) { $0.copyBytes(from: bytes) }
            return body(
                raw.baseAddress!.assumingMemoryBound(to: sockaddr.self),
                socklen_t(MemoryLayout<sockaddr_in6>.size)
            )
        } else {
            let sin = raw.baseAddress!.assumingMemoryBound(to: sockaddr_in.self)
            sin.pointee.sin_family = sa_family_t(AF_INET)
            sin.pointee.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin.pointee.sin_addr) { $0.copyBytes(from: bytes) }
            return body(
                raw.baseAddress!.assumingMemoryBound(to: sockaddr.self),
                socklen_t(MemoryLayout<sockaddr_in>.size)
            )
        }
    }
}

func describe(_ storage: sockaddr_storage) -> String {
    var copy = storage
    return withUnsafeBytes(of: &copy) { raw in
        if storage.ss_family == sa_family_t(AF_INET6) {
            let sin6 = raw.load(as: sockaddr_in6.self)
            let address = IPAddress(bytes: withUnsafeBytes(of: sin6.sin6_addr) { Array($0) })!
            return "\(address.bracketed):\(UInt16(bigEndian: sin6.sin6_port))"
        }
        let sin = raw.load(as: sockaddr_in.self)
        let address = IPAddress(bytes: withUnsafeBytes(of: sin.sin_addr) { Array($0) })!
        return "\(address):\(UInt16(bigEndian: sin.sin_port))"
    }
}

private func errorText() -> String { String(cString: strerror(errno)) }

private func socketFor(_ proto: String, _ address: IPAddress) -> Int32 {
    let fd = socket(
        address.isV6 ? AF_INET6 : AF_INET,
        Int32(proto == "udp" ? SOCK_DGRAM.rawValue : SOCK_STREAM.rawValue),
        0
    )
    if fd < 0 { fail("socket: \(errorText())") }
    var on: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
    return fd
}

private func bindTo(_ fd: Int32, _ address: IPAddress, _ port: UInt16) {
    let rc = withSockaddr(address, port) { bind(fd, $0, $1) }
    if rc != 0 { fail("bind \(address.bracketed):\(port): \(errorText())") }
}

/// `serve tcp|udp ADDRESS PORT`: answers each connection (after its EOF) or datagram with
/// `got N from PEER`, forever. Prints `listening` once ready.
func serve(_ proto: String, _ address: IPAddress, _ port: UInt16) -> Never {
    let fd = socketFor(proto, address)
    bindTo(fd, address, port)
    if proto == "tcp" && listen(fd, 64) != 0 { fail("listen: \(errorText())") }
    print("listening")
    fflush(nil)
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        var peer = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        if proto == "udp" {
            let got = withUnsafeMutablePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    recvfrom(fd, &buffer, buffer.count, 0, $0, &length)
                }
            }
            if got < 0 { continue }
            let reply = Array("got \(got) from \(describe(peer))\n".utf8)
            _ = withUnsafePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, reply, reply.count, 0, $0, length) }
            }
            continue
        }
        let client = withUnsafeMutablePointer(to: &peer) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { accept(fd, $0, &length) }
        }
        if client < 0 { continue }
        var total = 0
        while true {
            let got = read(client, &buffer, buffer.count)
            if got <= 0 { break }
            total += got
        }
        let reply = Array("got \(total) from \(describe(peer))\n".utf8)
        _ = write(client, reply, reply.count)
        close(client)
    }
}

/// `client tcp ADDRESS PORT BYTES`: sends BYTES, half-closes, prints the server's answer (or
/// `error: ...`). `client udp ADDRESS PORT SOURCEPORT`: one datagram from a fixed source port,
/// prints the answer, `no reply` or `error: ...`.
func client(_ proto: String, _ address: IPAddress, _ port: UInt16, _ number: Int) {
    let fd = socketFor(proto, address)
    defer { close(fd) }
    var timeout = timeval(tv_sec: 1, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    if proto == "udp" {
        bindTo(fd, address.isV6 ? .anyV6 : .anyV4, UInt16(number))
    }
    if withSockaddr(address, port, { connect(fd, $0, $1) }) != 0 {
        print("error: connect: \(errorText())")
        return
    }
    let payload = [UInt8](repeating: UInt8(ascii: "x"), count: proto == "udp" ? 100 : number)
    var sent = 0
    while sent < payload.count {
        let n = payload[sent...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n <= 0 {
            print("error: write: \(errorText())")
            return
        }
        sent += n
    }
    if proto == "tcp" { shutdown(fd, Int32(SHUT_WR)) }
    var buffer = [UInt8](repeating: 0, count: 4096)
    let got = read(fd, &buffer, buffer.count)
    if got > 0 {
        print(String(decoding: buffer[..<got], as: UTF8.self).trimmingSuffix { $0 == "\n" })
    } else if got == 0 || errno == EAGAIN {
        print("no reply")
    } else {
        print("error: read: \(errorText())")
    }
}

extension String {
    func trimmingSuffix(while drop: (Character) -> Bool) -> String {
        var s = Substring(self)
        while let last = s.last, drop(last) { s = s.dropLast() }
        return String(s)
    }
}
