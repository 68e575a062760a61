//! GraphQL's types, read from the API's contract: every object schema of
//! [`contract::document`](super::super::contract::document) becomes an
//! object type with the same name and the same (snake_case) fields, every
//! string enum an enum, so that a GraphQL answer is the REST answer,
//! field for field, and neither can change without the other.
//!
//! A field resolves by picking its key out of the parent's JSON (the REST
//! answer, serialized once); what it holds decides how it goes on: a
//! scalar as it is, an object or a list as JSON again for the fields
//! below. Integers wider than 32 bits (times in Unix milliseconds, counts)
//! are the `Long` scalar; free-form values (event data, KV values) the
//! `JSON` scalar.

use async_graphql::dynamic::{
    Enum, Field, FieldFuture, FieldValue, Object, ResolverContext, Scalar, TypeRef,
};
use serde_json::{Map, Value};

/// The scalar of integers wider than GraphQL's 32-bit `Int`.
pub const LONG: &str = "Long";

/// The scalar of any JSON value.
pub const JSON: &str = "JSON";

/// What a field holds, as its resolver must hand it on.
#[derive(Clone, Debug)]
pub enum Shape {
    /// A scalar or an enum: handed on as it is.
    Leaf(String),
    /// An object type: its fields resolve from this JSON.
    Object(String),
    /// A list of these.
    List(Box<Shape>),
}

impl Shape {
    /// The GraphQL type of the field.
    pub fn type_ref(&self, nullable: bool) -> TypeRef {
        let inner = match self {
            Shape::Leaf(name) | Shape::Object(name) => TypeRef::named(name),
            Shape::List(item) => TypeRef::List(Box::new(item.type_ref(false))),
        };
        if nullable {
            inner
        } else {
            TypeRef::NonNull(Box::new(inner))
        }
    }

    /// `value` as this shape's resolver answers it (`None` for null).
    pub fn resolve(&self, value: Value) -> Option<FieldValue<'static>> {
        match (self, value) {
            (_, Value::Null) => None,
            (Shape::Leaf(_), v) => Some(FieldValue::value(
                async_graphql::Value::from_json(v).unwrap_or(async_graphql::Value::Null),
            )),
            (Shape::Object(_), v) => Some(FieldValue::owned_any(v)),
            (Shape::List(item), Value::Array(items)) => Some(FieldValue::list(
                items
                    .into_iter()
                    .map(|v| item.resolve(v).unwrap_or(FieldValue::NULL)),
            )),
            (Shape::List(_), _) => None,
        }
    }
}

/// Every type of the contract's component schemas: objects, enums, and
/// the two scalars.
pub struct Types {
    /// An object type per object schema.
    pub objects: Vec<Object>,
    /// An enum per string enum.
    pub enums: Vec<Enum>,
    /// `Long` and `JSON`.
    pub scalars: Vec<Scalar>,
}

/// The types of `schemas` (the contract's `components.schemas`).
pub fn from_contract(schemas: &Map<String, Value>) -> Types {
    let mut types = Types {
        objects: Vec::new(),
        enums: Vec::new(),
        scalars: vec![Scalar::new(LONG), Scalar::new(JSON)],
    };
    for (name, schema) in schemas {
        if let Some(items) = schema["enum"].as_array() {
            let items = items.iter().filter_map(Value::as_str);
            types.enums.push(Enum::new(name).items(items));
        } else if let Some(properties) = properties(schema, schemas) {
            let mut object = Object::new(name);
            if let Some(about) = schema["description"].as_str() {
                object = object.description(about);
            }
            for (field, (schema, required)) in properties {
                object = object.field(field_of(&field, &schema, required, schemas));
            }
            types.objects.push(object);
        }
    }
    types
}

/// An object schema's properties with whether each is required; `allOf`
/// (a flattened struct) merges its parts. `None` for a schema that is not
/// an object with properties.
fn properties(schema: &Value, all: &Map<String, Value>) -> Option<Vec<(String, (Value, bool))>> {
    if let Some(parts) = schema["allOf"].as_array() {
        let mut merged = Vec::new();
        for part in parts {
            let part = follow(part, all);
            merged.extend(properties(part, all)?);
        }
        return Some(merged);
    }
    let properties = schema["properties"].as_object()?;
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    Some(
        properties
            .iter()
            .map(|(k, v)| (k.clone(), (v.clone(), required.contains(&k.as_str()))))
            .collect(),
    )
}

/// The schema a `$ref` names, or `schema` itself.
fn follow<'a>(schema: &'a Value, all: &'a Map<String, Value>) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => &all[r.trim_start_matches("#/components/schemas/")],
        None => schema,
    }
}

/// The field `name` of an object, resolved from the parent's JSON.
fn field_of(name: &str, schema: &Value, required: bool, all: &Map<String, Value>) -> Field {
    let (shape, nullable) = shape_of(schema, all);
    let key = name.to_owned();
    let resolver = shape.clone();
    let mut field = Field::new(
        name,
        shape.type_ref(nullable || !required),
        move |ctx: ResolverContext<'_>| {
            let value = ctx
                .parent_value
                .downcast_ref::<Value>()
                .and_then(|parent| parent.get(&key))
                .cloned()
                .unwrap_or(Value::Null);
            FieldFuture::Value(resolver.resolve(value))
        },
    );
    if let Some(about) = schema["description"].as_str() {
        field = field.description(about);
    }
    field
}

/// What a property's schema holds, and whether it may be null.
fn shape_of(schema: &Value, all: &Map<String, Value>) -> (Shape, bool) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return (named(name, all), false);
    }
    if let Some(options) = schema["oneOf"].as_array() {
        let nullable = options.iter().any(|o| o["type"] == "null");
        let real: Vec<&Value> = options.iter().filter(|o| o["type"] != "null").collect();
        return match real.as_slice() {
            [one] => (shape_of(one, all).0, nullable),
            _ => (Shape::Leaf(JSON.into()), true),
        };
    }
    let (kind, nullable) = match &schema["type"] {
        Value::String(kind) => (kind.as_str(), false),
        Value::Array(kinds) => {
            let nullable = kinds.iter().any(|k| k == "null");
            let kind = kinds
                .iter()
                .filter_map(Value::as_str)
                .find(|k| *k != "null");
            (kind.unwrap_or("object"), nullable)
        }
        _ => return (Shape::Leaf(JSON.into()), true),
    };
    let shape = match kind {
        "string" => Shape::Leaf("String".into()),
        "boolean" => Shape::Leaf("Boolean".into()),
        "number" => Shape::Leaf("Float".into()),
        "integer" if schema["format"] == "int32" && schema["minimum"].is_null() => {
            Shape::Leaf("Int".into())
        }
        "integer" => Shape::Leaf(LONG.into()),
        "array" => Shape::List(Box::new(shape_of(&schema["items"], all).0)),
        _ => Shape::Leaf(JSON.into()),
    };
    (shape, nullable)
}

/// The shape of the component schema `name`.
pub fn named(name: &str, all: &Map<String, Value>) -> Shape {
    let schema = &all[name];
    if schema["enum"].is_array() {
        Shape::Leaf(name.into())
    } else if properties(schema, all).is_some() {
        Shape::Object(name.into())
    } else {
        shape_of(schema, all).0
    }
}
