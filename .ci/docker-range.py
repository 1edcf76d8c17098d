# In docker-test.sh's image (the host's /usr mounted): answers "port N" on every TCP port from
# $RANGE_FIRST to $RANGE_LAST, IPv4 and IPv6, then closes the connection.
import os
import selectors
import socket

first, last = int(os.environ["RANGE_FIRST"]), int(os.environ["RANGE_LAST"])
sel = selectors.DefaultSelector()
for port in range(first, last + 1):
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    s.listen(64)
    sel.register(s, selectors.EVENT_READ, port)
while True:
    for key, _ in sel.select():
        c, _ = key.fileobj.accept()
        c.sendall(b"port %d\n" % key.data)
        c.close()
