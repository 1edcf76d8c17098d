import Mappings

/// docker-proxy compatible mode: one mapping, readiness on fd 3 (see the README).
enum ProxyMode {
    static func main(_ arguments: [String]) -> Int32 {
        complain("docker-proxy mode is not implemented yet")
        return 1
    }
}
