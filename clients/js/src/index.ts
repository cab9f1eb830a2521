export {
  HeraldClient,
  type ClientState,
  type ConnectEvent,
  type DisconnectEvent,
  type GapEvent,
  type HeraldClientEvents,
  type HeraldClientOptions,
  type KickedEvent,
  type UnsubscribedEvent,
  type PublishAck,
  type PublishOptions,
  type ReconnectingEvent,
} from './client.js';
export { HeraldError } from './errors.js';
export {
  Subscription,
  type GapInfo,
  type HeraldMessage,
  type MessageHandler,
  type SubscribeOptions,
} from './subscription.js';
export type { TransportName, WebSocketConstructor, EventSourceConstructor, PresenceEvent, PresentClient } from './transports/types.js';
export { parseCursor, encodeCursor, combineCursors, type CursorValue } from './cursor.js';
export { matchPattern, patternError, topicError, isConcrete, patternsOverlap } from './pattern.js';
export { backoffDelay } from './backoff.js';
export { SseParser } from './transports/sse-parser.js';
export { encodePublish, decodeDelivery, toBase64, fromBase64, type BinaryDelivery } from './binary.js';
