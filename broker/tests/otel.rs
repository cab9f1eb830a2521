//! OpenTelemetry end to end: a real OTLP/HTTP receiver in the test decodes
//! the protobuf Herald exports and finds the publisher's trace continued
//! through publish → log append → fan-out → delivery, on REST and on
//! WebSocket publishes; the message carries the context to subscribers.

mod common;

use std::{collections::HashMap, sync::Arc, time::Duration};

use common::*;
use opentelemetry_proto::tonic::{
    collector::{metrics::v1::ExportMetricsServiceRequest, trace::v1::ExportTraceServiceRequest},
    trace::v1::Span,
};
use prost::Message as _;
use serde_json::json;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
    sync::Mutex,
};

/// What the receiver got: spans, and metric names.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    metrics: Vec<String>,
    service_names: Vec<String>,
}

/// A minimal OTLP/HTTP receiver (HTTP/1.1, keep-alive, protobuf bodies).
async fn receiver() -> (String, Arc<Mutex<Received>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let got: Arc<Mutex<Received>> = Default::default();
    let sink = got.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let mut request_line = String::new();
                    if stream.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        stream.read_line(&mut line).await.unwrap();
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        let (k, v) = line.split_once(':').unwrap();
                        if k.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse().unwrap();
                        }
                        assert!(
                            !(k.eq_ignore_ascii_case("transfer-encoding")),
                            "chunked bodies are not expected"
                        );
                    }
                    let mut body = vec![0; length];
                    stream.read_exact(&mut body).await.unwrap();
                    let mut got = sink.lock().await;
                    match path.as_str() {
                        "/v1/traces" => {
                            let req = ExportTraceServiceRequest::decode(&body[..])
                                .expect("OTLP traces protobuf");
                            for rs in req.resource_spans {
                                if let Some(r) = &rs.resource {
                                    for a in &r.attributes {
                                        if a.key == "service.name" {
                                            got.service_names.push(format!("{:?}", a.value));
                                        }
                                    }
                                }
                                for ss in rs.scope_spans {
                                    got.spans.extend(ss.spans);
                                }
                            }
                        }
                        "/v1/metrics" => {
                            let req = ExportMetricsServiceRequest::decode(&body[..])
                                .expect("OTLP metrics protobuf");
                            for rm in req.resource_metrics {
                                for sm in rm.scope_metrics {
                                    got.metrics.extend(sm.metrics.into_iter().map(|m| m.name));
                                }
                            }
                        }
                        other => panic!("unexpected OTLP path {other}"),
                    }
                    drop(got);
                    let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if stream.get_mut().write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, got)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits until the receiver holds spans named `names` in trace `trace_id`;
/// returns that trace's spans by name.
async fn trace_spans(
    got: &Arc<Mutex<Received>>,
    trace_id: &str,
    names: &[&str],
) -> HashMap<String, Span> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        {
            let got = got.lock().await;
            let spans: HashMap<String, Span> = got
                .spans
                .iter()
                .filter(|s| hex(&s.trace_id) == trace_id)
                .map(|s| (s.name.clone(), s.clone()))
                .collect();
            if names.iter().all(|n| spans.contains_key(*n)) {
                return spans;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "trace {trace_id}: wanted {names:?}, have {:?} (all: {:?})",
                spans.keys().collect::<Vec<_>>(),
                got.spans
                    .iter()
                    .map(|s| (&s.name, hex(&s.trace_id)))
                    .collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const T1: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const S1: &str = "00f067aa0ba902b7";
const T2: &str = "0af7651916cd43dd8448eb211c80319c";
const S2: &str = "b7ad6b7169203331";

#[tokio::test]
async fn publisher_trace_continues_through_herald_to_the_subscriber() {
    let (endpoint, got) = receiver().await;
    let node = Node::start_with_env(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
            ("OTEL_SERVICE_NAME", "herald-under-test"),
        ],
    );
    let mut sub = node.ws().await;
    sub.subscribe("otel.t").await;

    // REST publish with the publisher's traceparent.
    let res = http()
        .post(node.url("/v1/topics/otel.t/messages"))
        .header("traceparent", format!("00-{T1}-{S1}-01"))
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let answered = res.headers()["traceparent"].to_str().unwrap().to_string();
    let m = sub.recv().await;
    assert_eq!(m["seq"], 1);
    let carried = m["traceparent"]
        .as_str()
        .expect("message carries traceparent");
    assert_eq!(carried, answered);
    let parts: Vec<&str> = carried.split('-').collect();
    assert_eq!(parts[1], T1, "same trace as the publisher");
    assert_ne!(parts[2], S1, "parented by Herald's publish span");

    let spans = trace_spans(&got, T1, &["publish", "log.append", "fanout", "deliver"]).await;
    let publish = &spans["publish"];
    assert_eq!(
        hex(&publish.parent_span_id),
        S1,
        "continues the publisher's span"
    );
    assert_eq!(hex(&publish.span_id), parts[2]);
    for step in ["log.append", "fanout", "deliver"] {
        assert_eq!(
            hex(&spans[step].parent_span_id),
            parts[2],
            "{step} is a child of the publish span"
        );
    }
    let deliver = &spans["deliver"];
    assert!(deliver
        .attributes
        .iter()
        .any(|a| a.key == "herald.transport" && format!("{:?}", a.value).contains("ws")));

    // WebSocket publish with a traceparent field.
    let mut publisher = node.ws().await;
    let (ack, _) = publisher
        .request(
            json!({"op":"publish","topic":"otel.t","data":2,"traceparent":format!("00-{T2}-{S2}-01")}),
            "p",
        )
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let m = sub.recv().await;
    assert_eq!(m["seq"], 2);
    assert!(m["traceparent"].as_str().unwrap().contains(T2));
    let spans = trace_spans(&got, T2, &["publish", "deliver"]).await;
    assert_eq!(hex(&spans["publish"].parent_span_id), S2);

    // Metrics go over OTLP too, and the service name is the configured one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let g = got.lock().await;
        if g.metrics.iter().any(|m| m == "herald.messages.published") {
            assert!(g
                .service_names
                .iter()
                .any(|s| s.contains("herald-under-test")));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no OTLP metrics: {:?}",
            g.metrics
        );
        drop(g);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn without_opentelemetry_the_traceparent_passes_through_unchanged() {
    let node = Node::start(&[]);
    let mut sub = node.ws().await;
    sub.subscribe("otel.p").await;
    let tp = format!("00-{T1}-{S1}-01");
    let res = http()
        .post(node.url("/v1/topics/otel.p/messages"))
        .header("traceparent", &tp)
        .json(&json!(1))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(sub.recv().await["traceparent"], tp.as_str());
    // An invalid one is ignored, as W3C asks; the publish still succeeds.
    let res = http()
        .post(node.url("/v1/topics/otel.p/messages"))
        .header("traceparent", "00-zz-11-01")
        .json(&json!(2))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let m = sub.recv().await;
    assert_eq!(m["seq"], 2);
    assert!(m.get("traceparent").is_none(), "{m}");
    // History returns the same envelope.
    let (_, history) = get_json(&node, "/v1/topics/otel.p/messages").await;
    assert_eq!(history["messages"][0]["traceparent"], tp.as_str());
}
