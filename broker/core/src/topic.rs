//! Topic names and subscription patterns (NATS token semantics).
//!
//! A topic is 1–16 tokens joined by `.`; a token is 1–64 of `[A-Za-z0-9_-]`;
//! the whole name is at most 255 bytes. A pattern is a topic in which a token
//! may be `*` (exactly one token) or, as the last token only, `>` (one or more
//! tokens).

use std::{fmt, sync::Arc};

use serde::{Serialize, Serializer};

/// Most tokens a topic or pattern may have.
pub const MAX_TOKENS: usize = 16;
/// Longest token, in bytes.
pub const MAX_TOKEN_LEN: usize = 64;
/// Longest topic or pattern, in bytes.
pub const MAX_TOPIC_LEN: usize = 255;

/// Why a topic or pattern was refused. The text is shown to clients as-is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Empty string.
    #[error("topic is empty")]
    Empty,
    /// More than [`MAX_TOPIC_LEN`] bytes.
    #[error("topic is longer than {MAX_TOPIC_LEN} bytes")]
    TooLong,
    /// More than [`MAX_TOKENS`] tokens.
    #[error("topic has more than {MAX_TOKENS} tokens")]
    TooManyTokens,
    /// `a..b`, `.a` or `a.`.
    #[error("topic has an empty token")]
    EmptyToken,
    /// A token over [`MAX_TOKEN_LEN`] bytes.
    #[error("topic token is longer than {MAX_TOKEN_LEN} bytes")]
    TokenTooLong,
    /// A character outside `[A-Za-z0-9_-]`.
    #[error("topic token {0:?} has a character outside [A-Za-z0-9_-]")]
    BadCharacter(String),
    /// `*` or `>` where a concrete topic is required (publish, history, `since`).
    #[error("wildcards are not allowed here; a concrete topic is required")]
    Wildcard,
    /// `>` anywhere but the last token, or a wildcard mixed into a token.
    #[error("'>' may only be the last token, and '*'/'>' must be whole tokens")]
    MisplacedWildcard,
}

/// One token of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PatternToken {
    /// Matches this token exactly.
    Literal(Box<str>),
    /// `*`: exactly one token.
    One,
    /// `>`: one or more tokens; only ever last.
    Rest,
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Checks length limits and splits into tokens; wildcards are judged by the caller.
fn split_checked(s: &str) -> Result<Vec<&str>, TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    let tokens: Vec<&str> = s.split('.').collect();
    if tokens.len() > MAX_TOKENS {
        return Err(TopicError::TooManyTokens);
    }
    for t in &tokens {
        if t.is_empty() {
            return Err(TopicError::EmptyToken);
        }
        if t.len() > MAX_TOKEN_LEN {
            return Err(TopicError::TokenTooLong);
        }
    }
    Ok(tokens)
}

fn check_literal(token: &str) -> Result<(), TopicError> {
    if token.bytes().all(is_token_char) {
        Ok(())
    } else if token.contains(['*', '>']) {
        Err(TopicError::MisplacedWildcard)
    } else {
        Err(TopicError::BadCharacter(token.chars().take(64).collect()))
    }
}

/// A validated concrete topic name. Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    /// Validates `s` as a concrete topic (no wildcards).
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        for token in split_checked(s)? {
            if token == "*" || token == ">" {
                return Err(TopicError::Wildcard);
            }
            check_literal(token)?;
        }
        Ok(Topic(Arc::from(s)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first token, to which namespace policies attach.
    pub fn namespace(&self) -> &str {
        namespace_of(&self.0)
    }

    /// The tokens of the name.
    pub fn tokens(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }
}

/// First token of a topic or pattern string.
pub fn namespace_of(s: &str) -> &str {
    s.split('.').next().unwrap_or(s)
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Topic {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for Topic {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A validated subscription pattern; a concrete topic is a pattern too.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: Arc<str>,
    tokens: Arc<[PatternToken]>,
    /// No wildcard: matching is comparing the text (the per-delivery check in
    /// the subscriber is on the fan-out hot path).
    exact: bool,
}

impl Pattern {
    /// Validates `s` as a subscription pattern.
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        let raw = split_checked(s)?;
        let last = raw.len() - 1;
        let mut tokens = Vec::with_capacity(raw.len());
        for (i, token) in raw.iter().enumerate() {
            tokens.push(match *token {
                "*" => PatternToken::One,
                ">" if i == last => PatternToken::Rest,
                ">" => return Err(TopicError::MisplacedWildcard),
                literal => {
                    check_literal(literal)?;
                    PatternToken::Literal(literal.into())
                }
            });
        }
        let exact = tokens.iter().all(|t| matches!(t, PatternToken::Literal(_)));
        Ok(Pattern {
            text: Arc::from(s),
            tokens: tokens.into(),
            exact,
        })
    }

    /// The pattern's text, shared (no copy).
    pub fn shared_text(&self) -> Arc<str> {
        self.text.clone()
    }

    /// The pattern as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed tokens.
    pub fn tokens(&self) -> &[PatternToken] {
        &self.tokens
    }

    /// The concrete topic this pattern names, if it has no wildcard.
    pub fn as_topic(&self) -> Option<Topic> {
        self.exact.then(|| Topic(self.text.clone()))
    }

    /// Whether `topic` is matched by this pattern (the reference matcher; the
    /// hub uses the trie in `index` instead of calling this per subscription).
    pub fn matches(&self, topic: &Topic) -> bool {
        if self.exact {
            return *self.text == *topic.as_str();
        }
        let mut names = topic.tokens();
        for (i, token) in self.tokens.iter().enumerate() {
            match token {
                PatternToken::Rest => {
                    debug_assert_eq!(i, self.tokens.len() - 1);
                    return names.next().is_some();
                }
                PatternToken::One => {
                    if names.next().is_none() {
                        return false;
                    }
                }
                PatternToken::Literal(l) => {
                    if names.next() != Some(&**l) {
                        return false;
                    }
                }
            }
        }
        names.next().is_none()
    }

    /// Whether every topic this pattern matches is also matched by `wider`
    /// (`chat.*` is covered by `chat.*` and `chat.>` but not the reverse).
    /// Used to check a subscription against the patterns a token grants.
    pub fn is_covered_by(&self, wider: &Pattern) -> bool {
        let (mine, theirs) = (&*self.tokens, &*wider.tokens);
        for (i, w) in theirs.iter().enumerate() {
            match w {
                PatternToken::Rest => return mine.len() > i,
                PatternToken::One => match mine.get(i) {
                    Some(PatternToken::Literal(_)) | Some(PatternToken::One) => {}
                    _ => return false,
                },
                PatternToken::Literal(l) => match mine.get(i) {
                    Some(PatternToken::Literal(m)) if m == l => {}
                    _ => return false,
                },
            }
        }
        mine.len() == theirs.len()
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Topic {
        Topic::parse(s).unwrap()
    }
    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn topic_validation() {
        assert!(Topic::parse("orders.eu").is_ok());
        assert!(Topic::parse("a-b_C9").is_ok());
        assert_eq!(Topic::parse(""), Err(TopicError::Empty));
        assert_eq!(Topic::parse("a..b"), Err(TopicError::EmptyToken));
        assert_eq!(Topic::parse(".a"), Err(TopicError::EmptyToken));
        assert_eq!(Topic::parse("a."), Err(TopicError::EmptyToken));
        assert_eq!(Topic::parse("orders.*"), Err(TopicError::Wildcard));
        assert_eq!(Topic::parse("orders.>"), Err(TopicError::Wildcard));
        assert!(matches!(
            Topic::parse("a b"),
            Err(TopicError::BadCharacter(_))
        ));
        assert!(matches!(
            Topic::parse("ü"),
            Err(TopicError::BadCharacter(_))
        ));
        assert_eq!(Topic::parse(&"a".repeat(65)), Err(TopicError::TokenTooLong));
        assert!(Topic::parse(&"a".repeat(64)).is_ok());
        let seventeen = vec!["a"; 17].join(".");
        assert_eq!(Topic::parse(&seventeen), Err(TopicError::TooManyTokens));
        let long = vec!["a".repeat(60); 5].join(".");
        assert_eq!(long.len(), 304);
        assert_eq!(Topic::parse(&long), Err(TopicError::TooLong));
        assert_eq!(t("orders.eu").namespace(), "orders");
    }

    #[test]
    fn pattern_validation() {
        assert!(Pattern::parse("orders.*").is_ok());
        assert!(Pattern::parse(">").is_ok());
        assert!(Pattern::parse("*.*.>").is_ok());
        assert_eq!(Pattern::parse("a.>.b"), Err(TopicError::MisplacedWildcard));
        assert_eq!(Pattern::parse("a.b*"), Err(TopicError::MisplacedWildcard));
        assert_eq!(Pattern::parse("a.>x"), Err(TopicError::MisplacedWildcard));
        assert_eq!(p("orders.eu").as_topic(), Some(t("orders.eu")));
        assert_eq!(p("orders.*").as_topic(), None);
    }

    #[test]
    fn nats_matching() {
        assert!(p("orders.*").matches(&t("orders.eu")));
        assert!(!p("orders.*").matches(&t("orders.eu.x")));
        assert!(!p("orders.*").matches(&t("orders")));
        assert!(p("orders.>").matches(&t("orders.eu")));
        assert!(p("orders.>").matches(&t("orders.eu.x")));
        assert!(!p("orders.>").matches(&t("orders")));
        assert!(p(">").matches(&t("a")));
        assert!(p("*.eu").matches(&t("orders.eu")));
        assert!(!p("orders.eu").matches(&t("payments.eu")));
        // A wildcard-free pattern compares text: exact only, no prefix.
        assert!(p("orders.eu").matches(&t("orders.eu")));
        assert!(!p("orders.eu").matches(&t("orders.eu.x")));
        assert!(!p("orders.eu").matches(&t("orders.eux")));
        assert!(!p("orders.eu").matches(&t("orders")));
    }

    #[test]
    fn coverage_never_escalates() {
        assert!(p("chat.x").is_covered_by(&p("chat.*")));
        assert!(p("chat.*").is_covered_by(&p("chat.*")));
        assert!(p("chat.*").is_covered_by(&p("chat.>")));
        assert!(p("chat.a.b").is_covered_by(&p("chat.>")));
        assert!(p("chat.>").is_covered_by(&p(">")));
        assert!(!p("chat.>").is_covered_by(&p("chat.*")));
        assert!(!p(">").is_covered_by(&p("chat.*")));
        assert!(!p(">").is_covered_by(&p("chat.>")));
        assert!(!p("chat").is_covered_by(&p("chat.>")));
        assert!(!p("*.x").is_covered_by(&p("chat.*")));
        assert!(!p("chat.*.x").is_covered_by(&p("chat.*")));
    }
}
