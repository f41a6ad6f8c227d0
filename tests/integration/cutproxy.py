"""A TCP proxy in front of a real PostgreSQL server that reproduces, on demand, the end of a backend killed by an
immediate shutdown right after it buffered its answer: when a client's request carries MARKER, the server's whole
answer is held until its ReadyForQuery, then everything before that ReadyForQuery is sent with the WARNING 57P01
PostgreSQL's quickdie() sends ("terminating connection due to immediate shutdown command") instead of it, and both
connections close. That is exactly what a client of a replica killed between CommandComplete and ReadyForQuery
receives; with a real `pg_ctl stop -m immediate` the timing cannot be chosen. Everything else is relayed as is
(libpq's probes, TLS negotiation, logins)."""
import socket
import threading

MARKER = b"pgr_cut_after_answer"


def _warning_57p01():
    fields = b"".join(k + v + b"\0" for k, v in [
        (b"S", b"WARNING"), (b"V", b"WARNING"), (b"C", b"57P01"),
        (b"M", b"terminating connection due to immediate shutdown command")]) + b"\0"
    return b"N" + (4 + len(fields)).to_bytes(4, "big") + fields


class CutProxy:
    def __init__(self, target_port, host="127.0.0.1"):
        self.target = (host, target_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.cuts = 0
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def endpoint(self):
        return {"host": self.target[0], "port": self.port}

    def close(self):
        self.closed = True
        self.listener.close()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            state = {"armed": False}
            threading.Thread(target=self._client_to_server, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._server_to_client, args=(client, server, state), daemon=True).start()

    @staticmethod
    def _shut(*socks):
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _client_to_server(self, client, server, state):
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                if MARKER in data:
                    state["armed"] = True  # before the server can answer it
                server.sendall(data)
        except OSError:
            pass
        self._shut(server)

    def _server_to_client(self, client, server, state):
        held = b""
        try:
            while True:
                data = server.recv(65536)
                if not data:
                    break
                if not state["armed"]:
                    client.sendall(data)
                    continue
                held += data  # the answer to the marked request: aligned on a message boundary
                pos = 0
                while pos + 5 <= len(held):
                    length = int.from_bytes(held[pos + 1:pos + 5], "big")
                    if pos + 1 + length > len(held):
                        break
                    if held[pos:pos + 1] == b"Z":
                        with self.lock:  # counted first: the client may look as soon as it has the answer
                            self.cuts += 1
                        client.sendall(held[:pos] + _warning_57p01())
                        self._shut(client, server)
                        return
                    pos += 1 + length
        except OSError:
            pass
        self._shut(client)
