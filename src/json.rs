//! Raw JSON in and out: what clients send inside ruma's `Raw` values, and typed raw values for
//! responses.

use ruma::serde::Raw;
use serde_json::Value as JsonValue;

use crate::error::{Error, Result};

/// Serializes a JSON value into a typed raw JSON value.
pub fn to_raw<T>(value: &JsonValue) -> Raw<T> {
    Raw::from_json(serde_json::value::to_raw_value(value).expect("JSON values serialize"))
}

/// The JSON inside a raw value a client sent, or M_BAD_JSON.
pub fn json_value<T>(raw: &Raw<T>) -> Result<JsonValue> {
    serde_json::from_str(raw.json().get()).map_err(|e| Error::bad_json(e.to_string()))
}

/// The JSON object inside a raw value a client sent, or M_BAD_JSON.
pub fn json_object<T>(raw: &Raw<T>) -> Result<serde_json::Map<String, JsonValue>> {
    match json_value(raw)? {
        JsonValue::Object(o) => Ok(o),
        _ => Err(Error::bad_json("Expected a JSON object")),
    }
}
