//! Every documented 401/403 and CORS answer of a node with auth on (its
//! tokens and nodes are in `tokens.rs`).

use super::*;

/// 401 and 403 (and what credentials make work) against openapi.yaml.
pub(crate) async fn check_auth_responses(spec: &OpenApi) {
    const MSGS: &str = "/v1/topics/{topic}/messages";
    const PRES: &str = "/v1/topics/{topic}/presence";
    const BATCH: &str = "/v1/publish";
    let dir = tempfile::tempdir().unwrap();
    let node = auth_node(dir.path(), "");
    let alice = alice();
    let bearer = format!("Bearer {alice}");
    let cookie = format!("herald_token={alice}");
    // JSON request headers plus one credentials header, if any.
    let json_as = |auth: Option<(&'static str, String)>| -> Vec<(&'static str, String)> {
        let mut h = vec![("content-type", "application/json".to_string())];
        h.extend(auth);
        h
    };
    let call = |method: &'static str,
                template: &'static str,
                path: String,
                headers: Vec<(&'static str, String)>,
                body: Option<&'static str>| {
        let node = &node;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            spec.call(
                node,
                method,
                Some(template),
                &path,
                &headers,
                body.map(|b| b.as_bytes().to_vec()),
            )
            .await
        }
    };
    let upgrade = |auth: Option<(&'static str, String)>| -> Vec<(&'static str, String)> {
        let mut h: Vec<(&'static str, String)> =
            UPGRADE.iter().map(|(k, v)| (*k, v.to_string())).collect();
        h.extend(auth);
        h
    };
    let expired = mint(now_secs() - 60, &[">"], &[">"]);
    let wrong_secret = sign(
        jsonwebtoken::Algorithm::HS256,
        "another-secret-another-secret",
        &json!({"sub":"alice","exp":now_secs() + 600,"publish":[">"]}),
    );
    let wrong_alg = sign(
        jsonwebtoken::Algorithm::HS384,
        SECRET,
        &json!({"sub":"alice","exp":now_secs() + 600,"publish":[">"]}),
    );
    let no_exp = sign(
        jsonwebtoken::Algorithm::HS256,
        SECRET,
        &json!({"sub":"alice","publish":[">"]}),
    );

    // 401: no credentials (and no anonymous grant), or unusable ones.
    let publish_path = || "/v1/topics/chat.room1/messages".to_string();
    let mut unauthorized = vec![
        ("POST", MSGS, publish_path(), json_as(None), Some("1")),
        (
            "POST",
            MSGS,
            publish_path(),
            json_as(Some(("x-api-key", "not-a-key".into()))),
            Some("1"),
        ),
        (
            "POST",
            BATCH,
            BATCH.to_string(),
            json_as(None),
            Some(r#"[{"topic":"chat.room1","data":1}]"#),
        ),
        (
            "GET",
            MSGS,
            "/v1/topics/chat.room1/messages".into(),
            vec![],
            None,
        ),
        (
            "GET",
            PRES,
            "/v1/topics/chat.room1/presence".into(),
            vec![],
            None,
        ),
        (
            // Invalid credentials are refused even where anonymous clients
            // would be let in.
            "GET",
            MSGS,
            "/v1/topics/public.news/messages?token=garbage".into(),
            vec![],
            None,
        ),
        (
            "GET",
            "/v1/sse",
            "/v1/sse?topic=chat.*".into(),
            vec![],
            None,
        ),
        (
            "GET",
            "/v1/sse",
            "/v1/sse?topic=public.%3E&topic=chat.*".into(),
            vec![],
            None,
        ),
        (
            "GET",
            "/v1/poll",
            "/v1/poll?topic=chat.*&timeout_ms=0".into(),
            vec![],
            None,
        ),
        (
            "GET",
            "/v1/ws",
            "/v1/ws?token=garbage".into(),
            upgrade(None),
            None,
        ),
        (
            "GET",
            "/v1/ws",
            "/v1/ws".into(),
            upgrade(Some(("cookie", format!("herald_token={expired}")))),
            None,
        ),
    ];
    for token in [
        &expired,
        &wrong_secret,
        &wrong_alg,
        &no_exp,
        &unsigned_token(),
    ] {
        unauthorized.push((
            "POST",
            MSGS,
            publish_path(),
            json_as(Some(("authorization", format!("Bearer {token}")))),
            Some("1"),
        ));
    }
    for (method, template, path, headers, body) in unauthorized {
        let what = format!("{method} {path} {headers:?}");
        let r = call(method, template, path, headers, body).await;
        expect(&r, 401, Some("unauthorized"), &what);
    }

    // 403: valid credentials, topic outside their grants.
    let as_alice = || vec![("authorization", bearer.clone())];
    let forbidden = [
        (
            "POST",
            MSGS,
            "/v1/topics/chat.room2/messages".to_string(),
            json_as(Some(("authorization", bearer.clone()))),
            Some("1"),
        ),
        (
            "POST",
            BATCH,
            BATCH.into(),
            json_as(Some(("authorization", bearer.clone()))),
            Some(r#"[{"topic":"chat.room1","data":1},{"topic":"chat.x","data":2}]"#),
        ),
        (
            "GET",
            MSGS,
            "/v1/topics/chat.x.y/messages".into(),
            as_alice(),
            None,
        ),
        (
            "GET",
            PRES,
            "/v1/topics/chat.x.y/presence".into(),
            as_alice(),
            None,
        ),
        (
            // Keys given with --api-key publish anywhere and read nothing.
            "GET",
            MSGS,
            "/v1/topics/chat.x/messages".into(),
            vec![("x-api-key", API_KEY.to_string())],
            None,
        ),
        (
            // `chat.*` never grants `chat.>`.
            "GET",
            "/v1/sse",
            format!("/v1/sse?topic=chat.%3E&token={alice}"),
            vec![],
            None,
        ),
        (
            "GET",
            "/v1/poll",
            "/v1/poll?topic=chat.*&cursor=1~0~other.x~1&timeout_ms=0".into(),
            as_alice(),
            None,
        ),
        (
            "GET",
            "/v1/poll",
            "/v1/poll?topic=%3E&timeout_ms=0".into(),
            as_alice(),
            None,
        ),
    ];
    for (method, template, path, headers, body) in forbidden {
        let what = format!("{method} {path}");
        let r = call(method, template, path, headers, body).await;
        expect(&r, 403, Some("forbidden"), &what);
    }

    // What the credentials allow, by every way of sending them.
    let allowed = [
        (
            "POST",
            MSGS,
            publish_path(),
            json_as(Some(("authorization", bearer.clone()))),
        ),
        (
            "POST",
            MSGS,
            publish_path(),
            json_as(Some(("cookie", cookie.clone()))),
        ),
        (
            "POST",
            MSGS,
            format!("{}?token={alice}", publish_path()),
            json_as(None),
        ),
        (
            "POST",
            MSGS,
            publish_path(),
            json_as(Some(("x-api-key", API_KEY.into()))),
        ),
        (
            "POST",
            MSGS,
            publish_path(),
            json_as(Some(("authorization", format!("Bearer {API_KEY}")))),
        ),
    ];
    for (method, template, path, headers) in allowed {
        let what = format!("{method} {path} {headers:?}");
        let r = call(method, template, path, headers, Some("1")).await;
        expect(&r, 200, None, &what);
    }
    let r = call(
        "GET",
        MSGS,
        "/v1/topics/chat.room1/messages".into(),
        as_alice(),
        None,
    )
    .await;
    expect(&r, 200, None, "history with a token");
    assert_eq!(r.body["last_seq"], 5, "{}", r.body);
    let r = call(
        "GET",
        PRES,
        format!("/v1/topics/chat.room1/presence?token={alice}"),
        vec![],
        None,
    )
    .await;
    expect(&r, 200, None, "presence with a token");
    for (path, headers) in [
        ("/v1/poll?topic=public.%3E&timeout_ms=0".to_string(), vec![]),
        (
            format!("/v1/poll?topic=chat.*&topic=public.news&timeout_ms=0&token={alice}"),
            vec![],
        ),
    ] {
        let r = call("GET", "/v1/poll", path.clone(), headers, None).await;
        expect(&r, 200, None, &path);
    }
    let mut sse = open_sse(spec, &node, &format!("topic=chat.*&token={alice}"), None)
        .await
        .unwrap_or_else(|r| panic!("SSE with a token refused: {}", r.body));
    assert!(matches!(sse.next(TIMEOUT).await, Some(Block::Opening)));
    // The stream is present, under its token's subject (so is the
    // long-poll session above, for 5 s after its request).
    let r = call(
        "GET",
        PRES,
        "/v1/topics/chat.room1/presence".into(),
        as_alice(),
        None,
    )
    .await;
    expect(&r, 200, None, "presence with a bearer token");
    assert!(
        r.body["clients"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["sub"] == "alice" && c["transport"] == "sse"),
        "{}",
        r.body
    );
    let (_ws, response) =
        tokio_tungstenite::connect_async(node.ws_url(&format!("/v1/ws?token={alice}")))
            .await
            .expect("upgrade with a token");
    spec.check("GET", Some("/v1/ws"), response.status().as_u16(), None, b"");

    // With auth on and no --allowed-origins, only the node's own origin.
    let r = call(
        "GET",
        "/healthz",
        "/healthz".into(),
        vec![("origin", "https://app.example".into())],
        None,
    )
    .await;
    expect(&r, 403, Some("forbidden"), "another origin with auth on");
    let own = format!("http://{}", node.addr);
    let res = http()
        .get(node.url("/healthz"))
        .header("origin", &own)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "own origin");
    assert_eq!(res.headers()["access-control-allow-origin"], own.as_str());
    assert_eq!(res.headers()["access-control-allow-credentials"], "true");
}
