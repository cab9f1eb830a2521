use super::*;
use crate::{
    cluster::wire::ForwardAck,
    hub::{Payload, Topic},
};

fn waiting(topics: &[&str]) -> (Waiting, oneshot::Receiver<Answer>) {
    let (reply, rx) = oneshot::channel();
    let items = topics
        .iter()
        .map(|t| PublishItem {
            topic: Topic::parse(t).unwrap(),
            data: Payload::Json("1".into()),
            idempotency_key: None,
            traceparent: None,
        })
        .collect();
    (Waiting { items, reply }, rx)
}

fn ok(seqs: &[u64]) -> ForwardReply {
    ForwardReply {
        ok: Some(
            seqs.iter()
                .map(|&seq| ForwardAck {
                    seq,
                    ts: 7,
                    dup: false,
                })
                .collect(),
        ),
        err: None,
        each: None,
    }
}

fn seqs(answer: &Answer) -> Vec<(String, u64)> {
    answer
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.topic.as_str().to_string(), p.seq))
        .collect()
}

#[test]
fn each_request_of_a_coalesced_forward_gets_its_own_answer() {
    let batch = [
        waiting(&["a.x", "a.y"]).0,
        waiting(&["b.x"]).0,
        waiting(&["c.x"]).0,
    ];
    let reply = ForwardReply {
        ok: None,
        err: None,
        each: Some(vec![
            ok(&[4, 9]),
            refused_reply("unavailable", "cannot take over the topic"),
            refused_reply("not_owner", "not the owner"),
        ]),
    };
    let got = answers(reply, &batch);
    assert_eq!(
        seqs(&got[0]),
        [("a.x".to_string(), 4), ("a.y".to_string(), 9)]
    );
    assert!(matches!(
        &got[1],
        Err(RouteError::Failed(PublishError::Unavailable(m))) if m == "cannot take over the topic"
    ));
    assert!(matches!(&got[2], Err(RouteError::Moved(_))));
}

#[test]
fn one_answer_from_an_older_owner_is_split_over_the_requests() {
    let batch = [waiting(&["a.x", "a.y"]).0, waiting(&["b.x"]).0];
    let got = answers(ok(&[4, 9, 2]), &batch);
    assert_eq!(
        seqs(&got[0]),
        [("a.x".to_string(), 4), ("a.y".to_string(), 9)]
    );
    assert_eq!(seqs(&got[1]), [("b.x".to_string(), 2)]);
    let refused = answers(refused_reply("unavailable", "down"), &batch);
    assert!(refused
        .iter()
        .all(|a| matches!(a, Err(RouteError::Failed(_)))));
}

#[test]
fn an_answer_that_does_not_fit_the_requests_is_malformed_for_all() {
    let batch = [waiting(&["a.x", "a.y"]).0, waiting(&["b.x"]).0];
    // Two acks for three items.
    let short = answers(ok(&[4, 9]), &batch);
    // One answer in `each` for two requests.
    let each = ForwardReply {
        ok: None,
        err: None,
        each: Some(vec![ok(&[4, 9])]),
    };
    for got in [short, answers(each, &batch)] {
        assert!(got.iter().all(|a| matches!(
            a,
            Err(RouteError::Failed(PublishError::Unavailable(m))) if m.contains("malformed")
        )));
    }
}

#[test]
fn the_size_estimate_covers_what_a_forward_encodes() {
    let item = |data: Payload, key: Option<&str>| PublishItem {
        topic: Topic::parse("orders.eu.created").unwrap(),
        data,
        idempotency_key: key.map(str::to_string),
        traceparent: Some(format!("00-{}-{}-01", "a".repeat(32), "b".repeat(16))),
    };
    let (reply, _rx) = oneshot::channel();
    let waiting = Waiting {
        items: vec![
            item(
                Payload::Json(r#"{"a":"\u00e9\n","b":[1,2]}"#.into()),
                Some(&"k".repeat(255)),
            ),
            item(Payload::Binary(vec![0xff; 1000].into()), None),
            item(Payload::Json("1".into()), None),
        ],
        reply,
    };
    let encoded = wire::encode(&Forward {
        items: waiting.items.iter().map(ForwardItem::new).collect(),
        requests: Some(vec![waiting.items.len()]),
    });
    assert!(
        encoded.len() <= waiting.wire_bytes(),
        "{} encoded, {} estimated",
        encoded.len(),
        waiting.wire_bytes()
    );
}

fn refused_reply(code: &str, message: &str) -> ForwardReply {
    ForwardReply {
        ok: None,
        err: Some((code.into(), message.into())),
        each: None,
    }
}
