//! Checks a running `herald` against the machine-readable protocol specs in
//! `protocol-spec/`: `asyncapi.yaml` (every WebSocket frame) and
//! `openapi.yaml` (every HTTP response), in both directions:
//!
//! * every server frame the test provokes must have a `type` documented in
//!   `asyncapi.yaml` and validate against its (strict) schema; every accepted
//!   client op must validate against its op schema and every op refused for
//!   its shape must not;
//! * every HTTP response must have a status documented for its path and
//!   method, a documented content type, and a body that validates; every
//!   documented status except 500/503 must actually be provoked;
//! * every documented path and method must be routed by the server, and every
//!   documented example op must be accepted;
//! * auth (401/403, `refresh`, `unauthorized`/`forbidden` frames, close 4003)
//!   and limits (429/503, `rate_limited` frames) are provoked on extra nodes
//!   started with `--jwt-secret` and small `[limits]`; cursor resume and the
//!   `pong` floor are checked end to end;
//! * documented response headers are checked (`Allow` on 405, `traceparent`
//!   on publish); presence (REST list, `join`/`leave` WebSocket frames, SSE
//!   events without `id:`, long-poll `presence`/`client_id`), the history and
//!   presence switches (404) and trace context in envelopes are provoked and
//!   validated; a node drained with SIGTERM closes WebSockets with 1012;
//! * the admin API (`spec_conformance/admin.rs`): every status of its routes,
//!   presence counts, the long-poll 410, the SSE `unsubscribed`/`kicked`
//!   events, the unasked `unsubscribed` frame and close 4004.
//!
//! `$ref`s are resolved in `specs.rs` (local `#/...` references only);
//! OpenAPI schemas are checked as JSON Schema 2020-12, AsyncAPI payloads as
//! draft 7.
//!
//! Layout under `spec_conformance/`: the machinery (`specs`, `openapi`,
//! `asyncapi`, `sse`, `helpers`, `tokens`), the checks run on extra nodes (`auth`,
//! `limits`, `dashboard`, `admin`), and one module per test
//! (`ws_frames`, `http_responses` with `http_streams`, `routes`, `ws_auth`,
//! `ws_resume`, `drain`).

#[path = "spec_conformance/admin.rs"]
mod admin;
#[path = "spec_conformance/asyncapi.rs"]
mod asyncapi;
#[path = "spec_conformance/auth.rs"]
mod auth;
mod common;
#[path = "spec_conformance/dashboard.rs"]
mod dashboard;
#[path = "spec_conformance/drain.rs"]
mod drain;
#[path = "spec_conformance/helpers.rs"]
mod helpers;
#[path = "spec_conformance/http_responses.rs"]
mod http_responses;
#[path = "spec_conformance/http_streams.rs"]
mod http_streams;
#[path = "spec_conformance/limits.rs"]
mod limits;
#[path = "spec_conformance/openapi.rs"]
mod openapi;
#[path = "spec_conformance/routes.rs"]
mod routes;
#[path = "spec_conformance/specs.rs"]
mod specs;
#[path = "spec_conformance/sse.rs"]
mod sse;
#[path = "spec_conformance/tokens.rs"]
mod tokens;
#[path = "spec_conformance/ws_auth.rs"]
mod ws_auth;
#[path = "spec_conformance/ws_frames.rs"]
mod ws_frames;
#[path = "spec_conformance/ws_resume.rs"]
mod ws_resume;

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    pin::Pin,
    time::Duration,
};

use common::*;
use futures_util::{SinkExt, Stream, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{
    protocol::{
        frame::{
            coding::{CloseCode, Data, OpCode},
            Frame,
        },
        CloseFrame,
    },
    Message as WsMessage,
};

use {
    asyncapi::*, auth::*, dashboard::*, helpers::*, http_streams::*, limits::*, openapi::*,
    routes::*, specs::*, sse::*, tokens::*,
};
