// The list the timeout queues and drain groups thread through their connections.

import XCTest

@testable import Relay

private final class Node {
    let name: Int
    var links = Links<Node>()
    init(_ name: Int) { self.name = name }
}

private enum NodeLinks: ListLinks {
    static subscript(_ node: Node) -> Links<Node> {
        get { node.links }
        _modify { yield &node.links }
    }
}

final class IntrusiveListTests: XCTestCase {
    private func names(_ list: IntrusiveList<NodeLinks>) -> [Int] {
        var out: [Int] = []
        var node = list.first
        while let n = node {
            out.append(n.name)
            node = list.next(n)
        }
        var back: [Int] = []
        node = list.last
        while let n = node {
            back.append(n.name)
            node = list.previous(n)
        }
        XCTAssertEqual(back, out.reversed(), "the links agree both ways")
        return out
    }

    func testInsertAndRemoveAnywhereKeepTheOrder() {
        var list = IntrusiveList<NodeLinks>()
        let nodes = (0..<5).map(Node.init)
        list.insert(nodes[2], after: nil)
        list.insert(nodes[0], after: nil)
        list.insert(nodes[4], after: list.last)
        list.insert(nodes[1], after: nodes[0])
        list.insert(nodes[3], after: nodes[2])
        XCTAssertEqual(names(list), [0, 1, 2, 3, 4])

        list.remove(nodes[2])
        XCTAssertEqual(names(list), [0, 1, 3, 4])
        XCTAssertNil(nodes[2].links.next, "a removed node lets go of the next one")
        list.remove(nodes[0])
        list.remove(nodes[4])
        XCTAssertEqual(names(list), [1, 3])
        list.remove(nodes[1])
        list.remove(nodes[3])
        XCTAssertTrue(list.isEmpty)
        XCTAssertNil(list.last)
    }

    func testTheListHoldsItsNodesUntilRemoved() {
        var list = IntrusiveList<NodeLinks>()
        weak var watched: Node?
        do {
            let a = Node(1)
            let b = Node(2)
            watched = b
            list.insert(a, after: nil)
            list.insert(b, after: a)
        }
        XCTAssertNotNil(watched, "held through the node before it")
        if let b = watched { list.remove(b) }
        XCTAssertNil(watched)
        XCTAssertEqual(names(list), [1])
    }
}
