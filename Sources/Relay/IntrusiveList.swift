// A doubly linked list threaded through its nodes, for the connection lists a loop keeps (a
// timeout queue, an acceptor's group): insert and remove are O(1) and allocate nothing. One
// node can be in several lists at once, each through links of its own, named by a `ListLinks`
// type the compiler specializes (no key path applied at run time).

/// The links of one node in one kind of list. `next` holds the next node (the list holds its
/// nodes); `previous` is not counted, as the node before holds this one.
struct Links<Node: AnyObject> {
    var next: Node?
    unowned(unsafe) var previous: Node?

    init() {}
}

/// Where a node keeps its links for one kind of list.
protocol ListLinks {
    associatedtype Node: AnyObject
    static subscript(_ node: Node) -> Links<Node> { get set }
}

struct IntrusiveList<L: ListLinks> {
    typealias Node = L.Node
    private(set) var first: Node?
    private(set) unowned(unsafe) var last: Node?

    init() {}

    var isEmpty: Bool { first == nil }

    func next(_ node: Node) -> Node? { L[node].next }
    func previous(_ node: Node) -> Node? { L[node].previous }

    /// Puts `node` (in no list of this kind) right after `after`, or first when it is nil.
    mutating func insert(_ node: Node, after: Node?) {
        let next: Node?
        if let after {
            next = L[after].next
            L[after].next = node
        } else {
            next = first
            first = node
        }
        L[node].previous = after
        L[node].next = next
        if let next { L[next].previous = node } else { last = node }
    }

    /// Takes `node` (in this list) out.
    mutating func remove(_ node: Node) {
        let links = L[node]
        if let p = links.previous { L[p].next = links.next } else { first = links.next }
        if let n = links.next { L[n].previous = links.previous } else { last = links.previous }
        L[node] = Links()
    }
}
