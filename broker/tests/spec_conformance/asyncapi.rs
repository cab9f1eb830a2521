//! `asyncapi.yaml`: WebSocket frames and ops against their schemas.

use super::*;

pub(crate) struct AsyncApi {
    pub(crate) root: Value,
    /// Server frame schemas by `type`.
    pub(crate) frames: BTreeMap<String, Value>,
    /// Client op schemas by `op`.
    pub(crate) ops: BTreeMap<String, Value>,
    /// Example client ops.
    pub(crate) examples: Vec<Value>,
    pub(crate) close_codes: BTreeSet<u16>,
}

impl AsyncApi {
    pub(crate) fn load() -> Self {
        let root = load_yaml("asyncapi.yaml");
        assert!(
            root["asyncapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.")),
            "asyncapi.yaml must be AsyncAPI 3.x"
        );
        let resolved = resolve(&root, &root);
        let mut frames = BTreeMap::new();
        let mut ops = BTreeMap::new();
        let mut examples = Vec::new();
        let key = |m: &Value, field: &str| -> String {
            m["payload"]["properties"][field]["const"]
                .as_str()
                .unwrap_or_else(|| panic!("message {} has no {field} const", m["name"]))
                .to_string()
        };
        for (name, op) in resolved["operations"].as_object().expect("operations") {
            // Binary frames (README §6.8) are checked byte for byte by
            // tests/binary.rs; the JSON frames are checked here.
            let messages: Vec<&Value> = op["messages"]
                .as_array()
                .expect("operation messages")
                .iter()
                .filter(|m| m["contentType"] != "application/octet-stream")
                .collect();
            match op["action"].as_str() {
                Some("send") => {
                    for m in messages {
                        frames.insert(key(m, "type"), m["payload"].clone());
                    }
                }
                Some("receive") => {
                    for m in messages {
                        ops.insert(key(m, "op"), m["payload"].clone());
                        for ex in m["examples"].as_array().into_iter().flatten() {
                            examples.push(ex["payload"].clone());
                        }
                    }
                    for m in op["reply"]["messages"].as_array().into_iter().flatten() {
                        frames.insert(key(m, "type"), m["payload"].clone());
                    }
                }
                other => panic!("operation {name}: action {other:?}"),
            }
        }
        for (name, schema) in &frames {
            assert_eq!(
                schema["additionalProperties"],
                json!(false),
                "server frame {name} must set additionalProperties: false"
            );
        }
        let close_codes = resolved["channels"]["herald"]["x-close-codes"]
            .as_array()
            .expect("x-close-codes")
            .iter()
            .map(|c| c["code"].as_u64().expect("code") as u16)
            .collect();
        AsyncApi {
            root,
            frames,
            ops,
            examples,
            close_codes,
        }
    }

    pub(crate) fn check_frame(&self, frame: &Value) {
        let ty = frame["type"]
            .as_str()
            .unwrap_or_else(|| panic!("server frame without a string type: {frame}"));
        let schema = self
            .frames
            .get(ty)
            .unwrap_or_else(|| panic!("server frame type {ty:?} is not in asyncapi.yaml: {frame}"));
        assert_valid(
            schema,
            frame,
            Dialect::AsyncApi,
            &format!("server frame {ty:?}"),
        );
    }

    /// Why `op` does not match any client op schema (empty when it does).
    pub(crate) fn op_errors(&self, op: &Value) -> Vec<String> {
        match op["op"].as_str().and_then(|name| self.ops.get(name)) {
            Some(schema) => schema_errors(schema, op, Dialect::AsyncApi),
            None => vec![format!("no op schema for {}", op["op"])],
        }
    }
}
