// Herald over WebSocket on an ESP32: subscribes to concrete
// topics with `since`, resumes after every reconnect from the last seq it
// handled (kept across reboots in flash), moves to the next node when one
// goes away or cannot serve yet, and publishes readings with an idempotency
// key so that a retry never stores a reading twice.
//
// Libraries (Arduino Library Manager): "WebSockets" by Markus Sattler
// (links2004, WebSocketsClient) 2.4+, and "ArduinoJson" by Benoit Blanchon 7.x.
// The protocol is Herald's documented WebSocket ops (protocol-spec §6):
//   -> {"op":"subscribe","id":"s0","topic":"cmd.node7","since":41}
//   <- {"type":"subscribed","id":"s0","topic":"cmd.node7","cursor":"1~..."}
//   <- {"type":"message","topic":"cmd.node7","seq":42,"ts":...,"data":...}
//   -> {"op":"publish","id":"p17","topic":"sensors.node7","idempotency_key":"node7-3-17","data":{...}}
//   <- {"type":"ack","id":"p17","topic":"sensors.node7","seq":1234}

#include <Arduino.h>
#include <ArduinoJson.h>
#include <Preferences.h>
#include <WebSocketsClient.h>
#include <WiFi.h>

// ---- configuration ----------------------------------------------------------

static const char *WIFI_SSID = "your-ssid";
static const char *WIFI_PASS = "your-password";

// The nodes of one Herald cluster; the sketch moves to the next when one
// fails, closes (1012: draining) or refuses (`unavailable`).
struct Node {
  const char *host;
  uint16_t port;
};
static const Node NODES[] = {{"192.168.1.10", 8080}, {"192.168.1.11", 8080}};
static const size_t NODE_COUNT = sizeof(NODES) / sizeof(NODES[0]);

// Concrete topics to follow (`since` needs a concrete topic).
static const char *TOPICS[] = {"cmd.node7", "config.node7"};
static const size_t TOPIC_COUNT = sizeof(TOPICS) / sizeof(TOPICS[0]);

static const char *PUBLISH_TOPIC = "sensors.node7";
static const char *DEVICE_ID = "node7";
static const char *TOKEN = nullptr; // a JWT, sent as ?token= (nullptr: auth off)

static const uint32_t PUBLISH_EVERY_MS = 10000;
static const uint32_t ACK_TIMEOUT_MS = 5000;
static const uint32_t BACKOFF_MIN_MS = 500;
static const uint32_t BACKOFF_MAX_MS = 10000;
// What a node that refuses is given before it is asked again (Herald
// sends `Retry-After: 1`; an error frame carries none).
static const uint32_t RETRY_AFTER_MS = 1000;

// ---- state -----------------------------------------------------------------------

WebSocketsClient ws;
Preferences prefs;

static uint64_t lastSeq[TOPIC_COUNT]; // last seq handled per topic (0: none)
static size_t nodeIndex = 0;
static uint32_t notBefore[NODE_COUNT]; // millis() before which a node is not asked
static bool connected = false;
static bool switchNode = false; // leave this node at the next loop()
static bool ownClose = false;   // the disconnect under way is the sketch's own
static uint32_t reconnectAt = 0;
static uint32_t failures = 0;
static uint32_t connectedAt = 0;

// One publish in flight at a time; retried with the same key until acked.
static uint32_t bootId = 0;
static uint32_t publishCounter = 0;
static bool pending = false;
static char pendingKey[48];
static char pendingId[16];
static String pendingData;
static uint32_t pendingSentAt = 0;
static uint32_t lastPublishAt = 0;

// ---- positions, kept across reboots ---------------------------------------------------

static void loadPositions() {
  prefs.begin("herald", false);
  for (size_t i = 0; i < TOPIC_COUNT; i++) {
    lastSeq[i] = prefs.getULong64(TOPICS[i], 0);
  }
  bootId = prefs.getUInt("boot", 0) + 1;
  prefs.putUInt("boot", bootId);
}

// Flash wears: a real device would save every N messages or on a timer;
// a resume from an older seq only re-delivers what the sketch drops anyway.
static void savePosition(size_t i) { prefs.putULong64(TOPICS[i], lastSeq[i]); }

static int topicIndex(const char *topic) {
  for (size_t i = 0; i < TOPIC_COUNT; i++) {
    if (strcmp(topic, TOPICS[i]) == 0) return (int)i;
  }
  return -1;
}

// ---- what the application does with a message -------------------------------------------

static void handleMessage(const char *topic, uint64_t seq, JsonVariantConst data) {
  Serial.printf("%s #%llu: ", topic, (unsigned long long)seq);
  serializeJson(data, Serial);
  Serial.println();
}

static void handleGap(const char *topic, uint64_t from, uint64_t to) {
  Serial.printf("%s #%llu..#%llu were removed by retention before they arrived\n", topic,
                (unsigned long long)from, (unsigned long long)to);
}

// ---- the connection --------------------------------------------------------------------

static void connectNode() {
  const Node &n = NODES[nodeIndex];
  String path = "/v1/ws";
  if (TOKEN) path += String("?token=") + TOKEN;
  Serial.printf("herald: connecting to %s:%u\n", n.host, n.port);
  ws.begin(n.host, n.port, path.c_str());
  // The node pings every 15 s and the library answers; these pings of its
  // own detect a dead link (no pong within 5 s, twice) on the device side.
  ws.enableHeartbeat(15000, 5000, 2);
  // Reconnection is driven below (next node, backoff), not by the library.
  ws.setReconnectInterval(0x7fffffff);
}

static uint32_t backoff() {
  uint32_t cap = BACKOFF_MIN_MS << (failures < 5 ? failures : 5);
  if (cap > BACKOFF_MAX_MS) cap = BACKOFF_MAX_MS;
  return cap / 2 + (uint32_t)random(cap / 2 + 1); // jitter: [cap/2, cap]
}

// Leaves the current node: the next one is tried after the backoff, and
// not before what it asked for if it refused earlier.
static void leaveNode(uint32_t refuseMs) {
  uint32_t now = millis();
  if (refuseMs) notBefore[nodeIndex] = now + refuseMs;
  if (connected && now - connectedAt > 5000) failures = 0; // it was stable
  failures++;
  nodeIndex = (nodeIndex + 1) % NODE_COUNT;
  uint32_t wait = backoff();
  int32_t untilAllowed = (int32_t)(notBefore[nodeIndex] - now);
  if (untilAllowed > (int32_t)wait) wait = (uint32_t)untilAllowed;
  reconnectAt = now + wait;
  switchNode = true;
  connected = false;
}

// Every topic resumes after the last seq handled: the node replays what
// came since (from its log, on any node of the cluster), then goes live,
// with no gap and no duplicate at the seam.
static void subscribeAll() {
  for (size_t i = 0; i < TOPIC_COUNT; i++) {
    JsonDocument op;
    op["op"] = "subscribe";
    op["id"] = String("s") + i;
    op["topic"] = TOPICS[i];
    op["since"] = lastSeq[i];
    String text;
    serializeJson(op, text);
    ws.sendTXT(text);
  }
}

static void sendPending() {
  if (!pending || !connected) return;
  JsonDocument op;
  op["op"] = "publish";
  op["id"] = pendingId;
  op["topic"] = PUBLISH_TOPIC;
  op["idempotency_key"] = pendingKey; // the same on every retry: stored once
  op["data"] = serialized(pendingData);
  String text;
  serializeJson(op, text);
  ws.sendTXT(text);
  pendingSentAt = millis();
}

static void onText(uint8_t *payload, size_t length) {
  JsonDocument frame;
  DeserializationError err = deserializeJson(frame, payload, length);
  if (err) {
    // Never skipped silently: a message that does not fit is a
    // configuration problem (raise the JsonDocument's memory).
    Serial.printf("herald: undecodable frame (%s); stopping\n", err.c_str());
    ws.disconnect();
    while (true) delay(1000);
  }
  const char *type = frame["type"] | "";
  if (strcmp(type, "message") == 0) {
    const char *topic = frame["topic"] | "";
    uint64_t seq = frame["seq"] | 0ULL;
    int i = topicIndex(topic);
    if (i < 0 || seq <= lastSeq[i]) return; // not ours, or already handled
    handleMessage(topic, seq, frame["data"]);
    lastSeq[i] = seq;
    savePosition(i);
  } else if (strcmp(type, "gap") == 0) {
    const char *topic = frame["topic"] | "";
    uint64_t to = frame["to"] | 0ULL;
    int i = topicIndex(topic);
    if (i < 0 || to <= lastSeq[i]) return;
    handleGap(topic, frame["from"] | 0ULL, to);
    lastSeq[i] = to;
    savePosition(i);
  } else if (strcmp(type, "ack") == 0) {
    if (pending && strcmp(frame["id"] | "", pendingId) == 0) {
      Serial.printf("herald: published as #%llu\n", (unsigned long long)(frame["seq"] | 0ULL));
      pending = false;
    }
  } else if (strcmp(type, "error") == 0) {
    const char *code = frame["code"] | "";
    Serial.printf("herald: %s refused: %s %s\n", (const char *)(frame["id"] | "?"), code,
                  (const char *)(frame["message"] | ""));
    if (strcmp(code, "unavailable") == 0) {
      // The node lost its cluster (or is shutting down): another node,
      // this one again after a while. Positions are kept.
      leaveNode(RETRY_AFTER_MS);
      ownClose = true;
      ws.disconnect();
      ownClose = false;
    } else if (pending && strcmp(frame["id"] | "", pendingId) == 0 && strcmp(code, "rate_limited") != 0) {
      pending = false; // refused for good (payload_too_large, forbidden, ...)
    }
  }
}

static void onEvent(WStype_t type, uint8_t *payload, size_t length) {
  switch (type) {
    case WStype_CONNECTED:
      connected = true;
      connectedAt = millis();
      Serial.println("herald: connected");
      subscribeAll();
      sendPending();
      break;
    case WStype_TEXT:
      onText(payload, length);
      break;
    case WStype_DISCONNECTED:
      // A node that closes (1012 while draining, 1001 going away) or
      // refuses the upgrade (503 `unavailable` while not caught up with its
      // cluster) or just went down: the next node; this one again after
      // RETRY_AFTER_MS at the earliest.
      if (!switchNode && !ownClose) {
        Serial.println("herald: disconnected");
        leaveNode(RETRY_AFTER_MS);
      }
      break;
    default:
      break;
  }
}

// ---- Arduino ---------------------------------------------------------------------------

void setup() {
  Serial.begin(115200);
  randomSeed(esp_random());
  loadPositions();
  WiFi.mode(WIFI_STA);
  WiFi.begin(WIFI_SSID, WIFI_PASS);
  while (WiFi.status() != WL_CONNECTED) delay(200);
  ws.onEvent(onEvent);
  connectNode();
}

void loop() {
  ws.loop();
  uint32_t now = millis();
  if (switchNode && (int32_t)(now - reconnectAt) >= 0) {
    switchNode = false;
    ownClose = true;
    ws.disconnect();
    ownClose = false;
    connectNode();
  }
  if (!pending && now - lastPublishAt >= PUBLISH_EVERY_MS) {
    lastPublishAt = now;
    publishCounter++;
    snprintf(pendingKey, sizeof(pendingKey), "%s-%lu-%lu", DEVICE_ID, (unsigned long)bootId,
             (unsigned long)publishCounter);
    snprintf(pendingId, sizeof(pendingId), "p%lu", (unsigned long)publishCounter);
    pendingData = String("{\"uptime_s\":") + (now / 1000) + "}";
    pending = true;
    sendPending();
  } else if (pending && connected && now - pendingSentAt >= ACK_TIMEOUT_MS) {
    sendPending(); // no ack yet: again, same key
  }
}
