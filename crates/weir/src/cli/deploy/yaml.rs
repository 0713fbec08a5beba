//! The YAML (and JSON) the manifests are written in: a tree that keeps its fields' order,
//! every key and string written as a JSON string literal (see the module above).

/// A manifest, keeping the order its fields are written in.
#[derive(Clone, Debug)]
pub(super) enum Node {
    Map(Vec<(String, Node)>),
    List(Vec<Node>),
    Str(String),
    Int(i64),
    Bool(bool),
}

impl Node {
    pub(super) fn str(s: impl Into<String>) -> Node {
        Node::Str(s.into())
    }

    pub(super) fn map(fields: Vec<(&str, Node)>) -> Node {
        Node::Map(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    pub(super) fn to_json(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    pub(super) fn write_json(&self, out: &mut String) {
        match self {
            Node::Map(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&quote(k));
                    out.push(':');
                    v.write_json(out);
                }
                out.push('}');
            }
            Node::List(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write_json(out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.scalar()),
        }
    }

    pub(super) fn scalar(&self) -> String {
        match self {
            Node::Str(s) => quote(s),
            Node::Int(n) => n.to_string(),
            Node::Bool(b) => b.to_string(),
            Node::Map(m) if m.is_empty() => "{}".into(),
            Node::List(l) if l.is_empty() => "[]".into(),
            Node::Map(_) | Node::List(_) => unreachable!("not a scalar"),
        }
    }

    pub(super) fn is_block(&self) -> bool {
        matches!(self, Node::Map(m) if !m.is_empty())
            || matches!(self, Node::List(l) if !l.is_empty())
    }

    /// One YAML document.
    pub(super) fn to_yaml(&self) -> String {
        let mut out = String::new();
        self.write_yaml(&mut out, 0);
        out
    }

    /// Writes a block node whose first line starts at the current position (already
    /// indented by `indent`).
    pub(super) fn write_yaml(&self, out: &mut String, indent: usize) {
        let pad = " ".repeat(indent);
        match self {
            Node::Map(fields) if !fields.is_empty() => {
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&pad);
                    }
                    out.push_str(&yaml_key(k));
                    out.push(':');
                    if v.is_block() {
                        out.push('\n');
                        out.push_str(&" ".repeat(indent + 2));
                        v.write_yaml(out, indent + 2);
                    } else {
                        out.push(' ');
                        out.push_str(&v.scalar());
                        out.push('\n');
                    }
                }
            }
            Node::List(items) if !items.is_empty() => {
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&pad);
                    }
                    out.push_str("- ");
                    if v.is_block() {
                        v.write_yaml(out, indent + 2);
                    } else {
                        out.push_str(&v.scalar());
                        out.push('\n');
                    }
                }
            }
            scalar => {
                out.push_str(&scalar.scalar());
                out.push('\n');
            }
        }
    }
}

/// A mapping key: bare when it is a plain name that YAML cannot read as anything but that
/// string (`apiVersion`, `app.kubernetes.io/name`), quoted otherwise.
pub(super) fn yaml_key(k: &str) -> String {
    const WORDS: &[&str] = &["true", "false", "yes", "no", "on", "off", "y", "n", "null"];
    let plain = k.starts_with(|c: char| c.is_ascii_alphabetic())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c))
        && !WORDS.contains(&k.to_ascii_lowercase().as_str());
    if plain { k.to_string() } else { quote(k) }
}

/// A JSON string literal: also a YAML double-quoted scalar of the same text (JSON's escapes
/// are a subset of YAML's).
pub(super) fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}
