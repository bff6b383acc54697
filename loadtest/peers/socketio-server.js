// A Socket.IO node for the side-by-side benchmark, set up the way
// Socket.IO's docs recommend for a cluster: the Redis adapter, WebSocket
// transport only. `subscribe` joins a room (acknowledged); `publish` emits
// to everyone in the room, on every node.
//
//   node socketio-server.js <port> <redis port>
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const Redis = require("ioredis");

const port = Number(process.argv[2]);
const redisPort = Number(process.argv[3]);
const pub = new Redis(redisPort, "127.0.0.1");
const sub = pub.duplicate();
const io = new Server(port, {
  transports: ["websocket"],
  adapter: createAdapter(pub, sub),
  maxHttpBufferSize: 1e6,
});
io.on("connection", (socket) => {
  socket.on("subscribe", (room, ack) => {
    socket.join(room);
    if (typeof ack === "function") ack("ok");
  });
  socket.on("publish", (msg) => {
    io.to(msg.room).emit("message", msg.payload);
  });
});
console.log(`socket.io listening on ${port}`);
