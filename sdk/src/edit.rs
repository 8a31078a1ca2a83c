//! Mutating an object without parsing what the policy does not touch.
//!
//! [`Node::read`] reads the object's JSON text once, guided by a [`Shape`]:
//! the parts the shape names become [`Value`]s (or nested nodes), everything
//! else stays a borrowed slice of the original text and is written back
//! byte for byte by [`Node::to_json`]. A mutating policy that edits a pod
//! template's tolerations thus never builds a `Value` of the rest of a
//! several-kilobyte object.

use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// Which parts of a JSON document to parse, and how.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// Keep as raw text.
    Raw,
    /// Parse into a [`Value`].
    Value,
    /// An object whose listed members have their own shapes; the others stay
    /// raw.
    Object(Vec<(String, Shape)>),
    /// Every member of an object, or every element of an array, has this
    /// shape.
    Each(Box<Shape>),
}

impl Shape {
    /// An object shape from `(member, shape)` pairs.
    pub fn object<'k>(members: impl IntoIterator<Item = (&'k str, Shape)>) -> Shape {
        Shape::Object(
            members
                .into_iter()
                .map(|(key, shape)| (key.to_owned(), shape))
                .collect(),
        )
    }

    /// The union of two shapes: what either parses, this one parses.
    pub fn merge(self, other: Shape) -> Shape {
        match (self, other) {
            (Shape::Raw, other) | (other, Shape::Raw) => other,
            (Shape::Value, _) | (_, Shape::Value) => Shape::Value,
            (Shape::Each(a), Shape::Each(b)) => Shape::Each(Box::new(a.merge(*b))),
            (Shape::Object(mut members), Shape::Object(more)) => {
                for (key, shape) in more {
                    match members.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, existing)) => {
                            *existing = std::mem::replace(existing, Shape::Raw).merge(shape);
                        }
                        None => members.push((key, shape)),
                    }
                }
                Shape::Object(members)
            }
            (Shape::Each(each), Shape::Object(members))
            | (Shape::Object(members), Shape::Each(each)) => Shape::Each(Box::new(
                members
                    .into_iter()
                    .fold(*each, |shape, (_, member)| shape.merge(member)),
            )),
        }
    }

    /// The shape of one member or element.
    pub(crate) fn member(&self, key: &str) -> &Shape {
        match self {
            Shape::Object(members) => members
                .iter()
                .find(|(k, _)| k == key)
                .map_or(&Shape::Raw, |(_, shape)| shape),
            Shape::Each(shape) => shape,
            Shape::Raw | Shape::Value => &Shape::Raw,
        }
    }
}

/// A JSON document read according to a [`Shape`].
#[derive(Debug, Clone)]
pub enum Node<'a> {
    /// Untouched text of the original document.
    Raw(&'a RawValue),
    /// A parsed (possibly edited) value.
    Value(Value),
    /// An object, members in their original order.
    Object(Vec<(String, Node<'a>)>),
    /// An array.
    Array(Vec<Node<'a>>),
}

impl<'a> Node<'a> {
    /// Reads `text` in one pass, parsing what `shape` names.
    ///
    /// # Errors
    ///
    /// When the text is not JSON.
    pub fn read(text: &'a str, shape: &Shape) -> Result<Self, serde_json::Error> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let node = Seed(shape).deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(node)
    }

    /// A member of an object node.
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        match self {
            Node::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, n)| n),
            _ => None,
        }
    }

    /// A member of an object node, mutably.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node<'a>> {
        match self {
            Node::Object(members) => members.iter_mut().find(|(k, _)| k == key).map(|(_, n)| n),
            _ => None,
        }
    }

    /// The parsed value of a value node.
    pub fn value(&self) -> Option<&Value> {
        match self {
            Node::Value(value) => Some(value),
            _ => None,
        }
    }

    /// The node at a JSON Pointer (RFC 6901), e.g. one found by
    /// [`crate::pod::TemplatePaths::template_pointers`].
    pub fn pointer_mut(&mut self, pointer: &str) -> Option<&mut Node<'a>> {
        let mut node = self;
        for segment in pointer.split('/').skip(1) {
            let segment = segment.replace("~1", "/").replace("~0", "~");
            node = match node {
                Node::Object(members) => members
                    .iter_mut()
                    .find(|(k, _)| *k == segment)
                    .map(|(_, n)| n)?,
                Node::Array(elements) => elements.get_mut(segment.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// The value of member `key` of an object node (`None` when absent, not
    /// an object, or not parsed as a value).
    pub fn member_value(&self, key: &str) -> Option<&Value> {
        self.get(key).and_then(Node::value)
    }

    /// Member `key` of an object node as a value, parsed in place if it was
    /// kept raw; `None` when absent (nothing is inserted).
    pub fn parse_member(&mut self, key: &str) -> Option<&Value> {
        let node = self.get_mut(key)?;
        if let Node::Raw(raw) = node {
            *node = Node::Value(serde_json::from_str(raw.get()).ok()?);
        }
        node.value()
    }

    /// The elements of an array node (empty otherwise).
    pub fn elements_mut(&mut self) -> &mut [Node<'a>] {
        match self {
            Node::Array(elements) => elements,
            _ => &mut [],
        }
    }

    /// The elements of an array node (empty otherwise).
    pub fn elements(&self) -> &[Node<'a>] {
        match self {
            Node::Array(elements) => elements,
            _ => &[],
        }
    }

    /// Member `key` of an object node as a value to edit: parsed from raw
    /// text if it was kept raw, inserted as `default` if absent. `None` when
    /// this node is not an object (or the member is a nested node).
    pub fn entry(&mut self, key: &str, default: impl FnOnce() -> Value) -> Option<&mut Value> {
        let Node::Object(members) = self else {
            return None;
        };
        let index = match members.iter().position(|(k, _)| k == key) {
            Some(index) => index,
            None => {
                members.push((key.to_owned(), Node::Value(default())));
                members.len() - 1
            }
        };
        let node = &mut members[index].1;
        if let Node::Raw(raw) = node {
            *node = Node::Value(serde_json::from_str(raw.get()).ok()?);
        }
        match node {
            Node::Value(value) => Some(value),
            _ => None,
        }
    }

    /// The document as JSON text: raw parts verbatim, parsed parts
    /// re-serialized.
    pub fn to_json(&self) -> String {
        let mut out = Vec::new();
        self.write(&mut out);
        String::from_utf8(out).expect("JSON text is UTF-8")
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Node::Raw(raw) => out.extend_from_slice(raw.get().as_bytes()),
            Node::Value(value) => {
                serde_json::to_writer(&mut *out, value).expect("writing to memory");
            }
            Node::Object(members) => {
                out.push(b'{');
                for (index, (key, node)) in members.iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, key).expect("writing to memory");
                    out.push(b':');
                    node.write(out);
                }
                out.push(b'}');
            }
            Node::Array(elements) => {
                out.push(b'[');
                for (index, node) in elements.iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    node.write(out);
                }
                out.push(b']');
            }
        }
    }
}

/// [`Node::read`] as a [`DeserializeSeed`], to read an object while
/// something larger is parsed (with [`crate::Request::parse_with`]).
pub struct NodeSeed(pub Shape);

impl<'de> DeserializeSeed<'de> for NodeSeed {
    type Value = Node<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node<'de>, D::Error> {
        Seed(&self.0).deserialize(deserializer)
    }
}

struct Seed<'s>(&'s Shape);

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Node<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node<'de>, D::Error> {
        match self.0 {
            Shape::Raw => <&'de RawValue>::deserialize(deserializer).map(Node::Raw),
            Shape::Value => Value::deserialize(deserializer).map(Node::Value),
            shape => deserializer.deserialize_any(ShapeVisitor(shape)),
        }
    }
}

/// Reads a container shape; a scalar where a container was expected
/// becomes a value node.
struct ShapeVisitor<'s>(&'s Shape);

impl<'de> Visitor<'de> for ShapeVisitor<'_> {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut members = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let node = map.next_value_seed(Seed(self.0.member(&key)))?;
            members.push((key, node));
        }
        Ok(Node::Object(members))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let element = match self.0 {
            Shape::Each(shape) => shape,
            _ => &Shape::Value,
        };
        let mut elements = Vec::new();
        while let Some(node) = seq.next_element_seed(Seed(element))? {
            elements.push(node);
        }
        Ok(Node::Array(elements))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node<'de>, E> {
        Ok(Node::Value(v.into()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node<'de>, E> {
        Ok(Node::Value(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node<'de>, E> {
        Ok(Node::Value(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node<'de>, E> {
        Ok(Node::Value(v.into()))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node<'de>, E> {
        Ok(Node::Value(v.into()))
    }

    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Value(Value::Null))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn untouched_parts_are_written_back_verbatim() {
        let text = r#"{"a" : {"x":1,  "y":[1, 2]},"b":{"c":"d","e":"\u00e9"},"n":null}"#;
        let shape = Shape::object([("b", Shape::object([("c", Shape::Value)]))]);
        let mut node = Node::read(text, &shape).unwrap();
        assert_eq!(node.get("b").unwrap().member_value("c"), Some(&json!("d")));
        *node
            .get_mut("b")
            .unwrap()
            .entry("c", || Value::Null)
            .unwrap() = json!("z");
        node.get_mut("b")
            .unwrap()
            .entry("new", || json!([]))
            .unwrap()
            .as_array_mut()
            .unwrap()
            .push(json!(1));
        assert_eq!(
            node.to_json(),
            r#"{"a":{"x":1,  "y":[1, 2]},"b":{"c":"z","e":"\u00e9","new":[1]},"n":null}"#
        );
    }

    #[test]
    fn each_reaches_every_element_and_member_and_raw_members_parse_on_demand() {
        let text = r#"{"list":[{"v":1,"w":2},{"v":3}],"map":{"p":{"v":4}}}"#;
        let each = Shape::Each(Box::new(Shape::object([("v", Shape::Value)])));
        let shape = Shape::object([("list", each.clone()), ("map", each)]);
        let mut node = Node::read(text, &shape).unwrap();
        let values: Vec<_> = node
            .get("list")
            .unwrap()
            .elements()
            .iter()
            .map(|e| e.member_value("v").cloned().unwrap())
            .collect();
        assert_eq!(values, vec![json!(1), json!(3)]);
        assert_eq!(
            node.get("map").unwrap().get("p").unwrap().member_value("v"),
            Some(&json!(4))
        );
        let first = &mut node.get_mut("list").unwrap().elements_mut()[0];
        assert_eq!(first.parse_member("w"), Some(&json!(2)));
        assert_eq!(first.parse_member("absent"), None);
        *first.entry("w", || Value::Null).unwrap() = json!(20);
        let reparsed: Value = serde_json::from_str(&node.to_json()).unwrap();
        assert_eq!(reparsed["list"][0], json!({"v": 1, "w": 20}));
    }

    #[test]
    fn scalars_where_objects_were_expected_survive() {
        let shape = Shape::object([("spec", Shape::object([("a", Shape::Value)]))]);
        for text in [r#"{"spec":null}"#, r#"{"spec":[1,2]}"#, r#"{"spec":"x"}"#] {
            assert_eq!(Node::read(text, &shape).unwrap().to_json(), text);
        }
        assert!(Node::read("{", &shape).is_err());
    }

    #[test]
    fn shapes_merge_as_unions() {
        let a = Shape::object([("m", Shape::Value)]);
        let b = Shape::object([("s", Shape::object([("c", Shape::Value)]))]);
        assert_eq!(
            a.merge(b),
            Shape::object([
                ("m", Shape::Value),
                ("s", Shape::object([("c", Shape::Value)]))
            ])
        );
    }
}
