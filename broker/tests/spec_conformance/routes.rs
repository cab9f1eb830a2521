//! Every documented route and example op is served.

use super::*;

#[tokio::test]
async fn every_documented_route_and_op_is_served() {
    let openapi = OpenApi::load();
    let asyncapi = AsyncApi::load();
    let node = Node::start(&["--enable-echo"]);
    for (template, method) in openapi.operations() {
        let path = template.replace("{topic}", "spec.route");
        let res = http()
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                node.url(&path),
            )
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let ct = content_type(res.headers());
        if ct.as_deref() == Some("text/event-stream") {
            // An endless stream: its status and media type are documented.
            openapi.media(&method, Some(&template), status, ct.as_deref());
            continue;
        }
        let body = res.bytes().await.unwrap();
        let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert!(
            !(status == 404 && parsed["error"]["code"] == "not_found"),
            "{method} {template} is documented but not routed"
        );
        openapi.check(&method, Some(&template), status, ct.as_deref(), &body);
    }
    // Every example op of asyncapi.yaml is accepted and answered with one of
    // its documented replies.
    let mut ws = node.ws().await;
    for example in &asyncapi.examples {
        let reply = exchange(&mut ws, example).await;
        assert_ne!(reply["type"], "error", "example {example} refused: {reply}");
        asyncapi.check_frame(&reply);
    }
    for frame in &ws.seen {
        asyncapi.check_frame(frame);
    }
}

/// Sends each op, checks its reply's type and code, and that accepted ops
/// match their schema; returns the replies.
pub(crate) async fn run_ops(
    spec: &AsyncApi,
    ws: &mut Ws,
    script: &[(Value, &str, Option<&str>)],
) -> Vec<Value> {
    let mut replies = Vec::new();
    for (op, want, code) in script {
        let reply = exchange(ws, op).await;
        assert_eq!(reply["type"], *want, "{op} → {reply}");
        assert_eq!(reply["code"].as_str(), *code, "{op} → {reply}");
        assert_eq!(reply.get("id"), op.get("id"), "id echoed: {reply}");
        spec.check_frame(&reply);
        let errors = spec.op_errors(op);
        assert!(errors.is_empty(), "op {op} fails its schema: {errors:?}");
        replies.push(reply);
    }
    replies
}
