use super::*;

fn err(text: &str) -> (Option<String>, ErrorCode) {
    let e = parse_op(text, 100).unwrap_err();
    (e.id.map(|i| i.get().to_string()), e.error.code)
}

#[test]
fn parses_ops() {
    match parse_op(r#"{"op":"subscribe","id":"1","topic":"orders.*"}"#, 100).unwrap() {
        ClientOp::Subscribe {
            id,
            pattern,
            resume,
            presence,
        } => {
            assert!(!presence);
            assert_eq!(id.unwrap().get(), "\"1\"");
            assert_eq!(pattern.as_str(), "orders.*");
            assert!(matches!(resume, Resume::Live));
        }
        other => panic!("{other:?}"),
    }
    match parse_op(
        r#"{"op":"publish","id":3,"topic":"a.b","data":{ "x" : 1 }}"#,
        100,
    )
    .unwrap()
    {
        ClientOp::Publish { data, .. } => assert_eq!(data, Payload::Json(r#"{"x":1}"#.into())),
        other => panic!("{other:?}"),
    }
}

#[test]
fn base64_publishes() {
    match parse_op(
        r#"{"op":"publish","topic":"a","data":"AP8=","encoding":"base64"}"#,
        2,
    )
    .unwrap()
    {
        ClientOp::Publish { data, .. } => {
            assert_eq!(data, Payload::Binary(vec![0, 0xff].into()))
        }
        other => panic!("{other:?}"),
    }
    // The limit counts the decoded bytes.
    assert_eq!(
        err(
            r#"{"op":"publish","id":1,"topic":"a","data":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","encoding":"base64"}"#
        ),
        (Some("1".into()), ErrorCode::PayloadTooLarge)
    );
    for bad in [
        r#"{"op":"publish","id":1,"topic":"a","data":"%%","encoding":"base64"}"#,
        r#"{"op":"publish","id":1,"topic":"a","data":{},"encoding":"base64"}"#,
        r#"{"op":"publish","id":1,"topic":"a","data":"AA==","encoding":"utf8"}"#,
    ] {
        assert_eq!(err(bad), (Some("1".into()), ErrorCode::BadRequest), "{bad}");
    }
}

#[test]
fn errors_keep_the_id() {
    assert_eq!(
        err(r#"{"op":"nope","id":"7"}"#),
        (Some("\"7\"".into()), ErrorCode::UnknownOp)
    );
    assert_eq!(
        err(r#"{"op":"publish","id":"8","topic":"a.*","data":1}"#),
        (Some("\"8\"".into()), ErrorCode::InvalidTopic)
    );
    assert_eq!(
        err(r#"{"op":"subscribe","id":9,"topic":"a","since":-1}"#),
        (Some("9".into()), ErrorCode::BadRequest)
    );
    assert_eq!(err(r#"{"op":"publish","topic":"a","data":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#).1, ErrorCode::PayloadTooLarge);
    assert_eq!(err("{not json"), (None, ErrorCode::BadRequest));
    assert_eq!(err("[1,2]"), (None, ErrorCode::BadRequest));
    assert_eq!(
        err(r#"{"op":"subscribe","id":{"x":1}}"#),
        (None, ErrorCode::BadRequest)
    );
    assert_eq!(
        err(r#"{"op":"publish","topic":"a"}"#).1,
        ErrorCode::BadRequest
    );
    assert!(matches!(
        parse_op(r#"{"op":"publish","topic":"a","data":null}"#, 100),
        Ok(ClientOp::Publish { data: Payload::Json(data), .. }) if data == "null"
    ));
}

#[test]
fn data_nesting_is_bounded() {
    use crate::json;
    let op = |depth: usize| {
        format!(
            r#"{{"op":"publish","id":"d","topic":"a","data":{}1{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        )
    };
    assert!(parse_op(&op(json::HARD_MAX_DEPTH), 1 << 20).is_ok());
    let e = parse_op(&op(json::HARD_MAX_DEPTH + 1), 1 << 20).unwrap_err();
    assert_eq!(e.id.map(|i| i.get().to_string()).as_deref(), Some("\"d\""));
    assert_eq!(e.error.code, ErrorCode::BadRequest);
    assert!(
        e.error.message.contains("nests deeper"),
        "{}",
        e.error.message
    );
    // Far past any stack: an error, not a crash.
    assert!(parse_op(&op(1_000_000), 1 << 24).is_err());
}

#[test]
fn replies_encode() {
    let id = RawValue::from_string("\"1\"".into()).unwrap();
    assert_eq!(
        Reply::Ack {
            id: Some(&id),
            topic: "a",
            seq: 4
        }
        .encode(),
        r#"{"type":"ack","id":"1","topic":"a","seq":4}"#
    );
    assert_eq!(
        Reply::Error {
            id: None,
            code: ErrorCode::UnknownOp,
            message: "x"
        }
        .encode(),
        r#"{"type":"error","code":"unknown_op","message":"x"}"#
    );
}
