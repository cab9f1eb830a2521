//! `openapi.yaml`: calling the node and recording which documented
//! (path, method, status) each response covers, after checking it.

use super::*;

pub(crate) const METHODS: [&str; 7] = ["get", "post", "put", "delete", "patch", "options", "head"];
/// Statuses documented but not provoked here (storage failure, shutdown).
pub(crate) const NOT_PROVOKED: [&str; 2] = ["500", "503"];
pub(crate) const UNROUTED: &str = "(unrouted)";
/// Request headers.
pub(crate) type Headers = &'static [(&'static str, &'static str)];
pub(crate) const JSON: Headers = &[("content-type", "application/json")];
pub(crate) const TEXT: Headers = &[("content-type", "text/plain")];
pub(crate) const JSON_ONCE: Headers = &[
    ("content-type", "application/json"),
    ("idempotency-key", "once-1"),
];

/// Path templates the checks use often.
pub(crate) const MSGS: &str = "/v1/topics/{topic}/messages";
pub(crate) const BATCH: &str = "/v1/publish";
pub(crate) const PRES: &str = "/v1/topics/{topic}/presence";
pub(crate) const POLL: &str = "/v1/poll";

pub(crate) struct OpenApi {
    pub(crate) root: Value,
    /// (path template, METHOD or `*`, status) seen so far.
    pub(crate) covered: RefCell<BTreeSet<(String, String, String)>>,
}

/// A fully read HTTP response.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Value,
    pub(crate) headers: reqwest::header::HeaderMap,
}

impl OpenApi {
    pub(crate) fn load() -> Self {
        let root = load_yaml("openapi.yaml");
        assert!(
            root["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
            "openapi.yaml must be OpenAPI 3.1"
        );
        OpenApi {
            root,
            covered: RefCell::new(BTreeSet::new()),
        }
    }

    /// Every documented (path, method, status), in the same form as `covered`.
    pub(crate) fn documented(&self) -> BTreeSet<(String, String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in self.root["paths"].as_object().expect("paths") {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    for status in op["responses"].as_object().expect("responses").keys() {
                        out.insert((path.clone(), method.to_uppercase(), status.clone()));
                    }
                }
            }
            if let Some(other) = item.get("x-other-methods") {
                for status in other["responses"].as_object().expect("responses").keys() {
                    out.insert((path.clone(), "*".into(), status.clone()));
                }
            }
        }
        for status in self.root["x-unrouted"]["responses"]
            .as_object()
            .expect("x-unrouted.responses")
            .keys()
        {
            out.insert((UNROUTED.into(), "*".into(), status.clone()));
        }
        out
    }

    /// Documented operations as (path template, METHOD).
    pub(crate) fn operations(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (path, item) in self.root["paths"].as_object().expect("paths") {
            for method in METHODS {
                if item.get(method).is_some() {
                    out.push((path.clone(), method.to_uppercase()));
                }
            }
        }
        out
    }

    /// The resolved response object for `status`; panics if undocumented.
    /// `template` is `None` for a path the spec does not list.
    pub(crate) fn response(&self, method: &str, template: Option<&str>, status: u16) -> Value {
        let status_key = status.to_string();
        let (key, responses) = match template {
            None => (
                (UNROUTED.to_string(), "*".to_string()),
                &self.root["x-unrouted"]["responses"],
            ),
            Some(t) => {
                let item = &self.root["paths"][t];
                assert!(item.is_object(), "path {t} is not in openapi.yaml");
                match item.get(method.to_lowercase()) {
                    Some(op) => ((t.to_string(), method.to_uppercase()), &op["responses"]),
                    None => (
                        (t.to_string(), "*".to_string()),
                        &item["x-other-methods"]["responses"],
                    ),
                }
            }
        };
        let response = responses.get(&status_key).unwrap_or_else(|| {
            panic!(
                "{method} {}: status {status} is not documented in openapi.yaml (documented: {:?})",
                template.unwrap_or(UNROUTED),
                responses.as_object().map(|m| m.keys().collect::<Vec<_>>())
            )
        });
        self.covered.borrow_mut().insert((key.0, key.1, status_key));
        resolve(&self.root, response)
    }

    /// The documented media type object matching `content_type`, or `None`
    /// when the response is documented without a body.
    pub(crate) fn media(
        &self,
        method: &str,
        template: Option<&str>,
        status: u16,
        content_type: Option<&str>,
    ) -> Option<Value> {
        let response = self.response(method, template, status);
        let content = response.get("content")?;
        let ct = content_type.unwrap_or_else(|| {
            panic!(
                "{method} {template:?} {status}: no Content-Type, documented {:?}",
                content.as_object().map(|m| m.keys().collect::<Vec<_>>())
            )
        });
        let mime = ct.split(';').next().unwrap().trim().to_ascii_lowercase();
        let media = content.get(&mime).unwrap_or_else(|| {
            panic!(
                "{method} {template:?} {status}: Content-Type {ct:?} is not documented (documented: {:?})",
                content.as_object().map(|m| m.keys().collect::<Vec<_>>())
            )
        });
        Some(media.clone())
    }

    /// Checks one complete response against the spec; returns the body as
    /// JSON (a string for text bodies, null for an empty one).
    pub(crate) fn check(
        &self,
        method: &str,
        template: Option<&str>,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Value {
        let what = format!("{method} {} → {status}", template.unwrap_or(UNROUTED));
        match self.media(method, template, status, content_type) {
            None => {
                assert!(
                    body.is_empty(),
                    "{what}: documented without a body, got {:?}",
                    String::from_utf8_lossy(body)
                );
                Value::Null
            }
            Some(media) => {
                let mime = content_type.unwrap().split(';').next().unwrap().trim();
                let instance = if mime.ends_with("json") {
                    serde_json::from_slice(body).unwrap_or_else(|e| {
                        panic!(
                            "{what}: body is not JSON ({e}): {:?}",
                            String::from_utf8_lossy(body)
                        )
                    })
                } else {
                    Value::String(
                        String::from_utf8(body.to_vec())
                            .unwrap_or_else(|_| panic!("{what}: text body is not UTF-8")),
                    )
                };
                let schema = media.get("schema").cloned().unwrap_or(json!({}));
                assert_valid(&schema, &instance, Dialect::OpenApi, &what);
                instance
            }
        }
    }

    /// Sends a request, reads the whole response and checks it.
    pub(crate) async fn call(
        &self,
        node: &Node,
        method: &str,
        template: Option<&str>,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut req = http().request(
            Method::from_bytes(method.as_bytes()).expect("method"),
            node.url(path),
        );
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = res.status().as_u16();
        let ct = content_type(res.headers());
        let headers = res.headers().clone();
        let bytes = res.bytes().await.expect("body");
        let body = self.check(method, template, status, ct.as_deref(), &bytes);
        self.check_headers(method, template, status, &headers);
        Reply {
            status,
            body,
            headers,
        }
    }

    /// Checks the response headers the spec documents for this status:
    /// `required` ones are present, and every present one matches its
    /// schema (`const`, `pattern`).
    pub(crate) fn check_headers(
        &self,
        method: &str,
        template: Option<&str>,
        status: u16,
        headers: &reqwest::header::HeaderMap,
    ) {
        let response = self.response(method, template, status);
        let Some(documented) = response.get("headers").and_then(Value::as_object) else {
            return;
        };
        for (name, header) in documented {
            let what = format!(
                "{method} {} → {status}: header {name}",
                template.unwrap_or(UNROUTED)
            );
            match headers.get(name.as_str()) {
                None => assert!(
                    header["required"] != json!(true),
                    "{what} is documented as required but missing"
                ),
                Some(value) => {
                    let value = json!(value.to_str().expect("header is text"));
                    let schema = header.get("schema").cloned().unwrap_or(json!({}));
                    assert_valid(&schema, &value, Dialect::OpenApi, &what);
                }
            }
        }
    }

    pub(crate) async fn get(&self, node: &Node, template: &str, path: &str) -> Reply {
        self.call(node, "GET", Some(template), path, &[], None)
            .await
    }

    pub(crate) async fn post_json(
        &self,
        node: &Node,
        template: &str,
        path: &str,
        body: &Value,
    ) -> Reply {
        self.call(
            node,
            "POST",
            Some(template),
            path,
            &[("content-type", "application/json")],
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    pub(crate) fn schema(&self, name: &str) -> Value {
        resolve(&self.root, &self.root["components"]["schemas"][name])
    }
}

pub(crate) fn content_type(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get("content-type")
        .map(|v| v.to_str().expect("content-type is text").to_string())
}

pub(crate) fn expect(reply: &Reply, status: u16, code: Option<&str>, what: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.body);
    if let Some(code) = code {
        assert_eq!(reply.body["error"]["code"], code, "{what}: {}", reply.body);
    }
}
