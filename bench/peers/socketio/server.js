// socket.io 4 broadcast server for herald-bench (bench/peers/socketio).
// Clients emit "subscribe" (topic) to join a room, and "publish"
// ({topic, data}, ack) to broadcast `["msg", topic, data]` to the room; the
// publisher gets a socket.io ack ([seq]) once the broadcast is handed to
// every member's socket. WebSocket transport only, no compression.
// Usage: node server.js [port]   (0 = any free port; prints "listening PORT")
const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2] || process.env.PORT || 0);
const httpServer = http.createServer((req, res) => {
  res.writeHead(req.url === "/healthz" ? 200 : 404);
  res.end();
});
const io = new Server(httpServer, {
  transports: ["websocket"],
  perMessageDeflate: false,
  httpCompression: false,
  serveClient: false,
  maxHttpBufferSize: 1e6,
  pingInterval: 25000,
  pingTimeout: 60000,
});
const seqs = new Map();
io.on("connection", (socket) => {
  socket.on("subscribe", (topic, ack) => {
    socket.join(String(topic));
    if (typeof ack === "function") ack("ok");
  });
  socket.on("publish", (msg, ack) => {
    const topic = String(msg && msg.topic);
    const seq = (seqs.get(topic) || 0) + 1;
    seqs.set(topic, seq);
    io.to(topic).emit("msg", topic, seq, msg && msg.data);
    if (typeof ack === "function") ack(seq);
  });
});
httpServer.listen(port, "127.0.0.1", () => {
  console.log(`listening ${httpServer.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));
